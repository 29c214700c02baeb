"""``grounded tune reranker``: train a cross-encoder on the same pairs, measured honestly.

A sentence-transformers ``CrossEncoder`` (a backbone with a one-logit head, by default the
embedding model's own MiniLM weights) is trained with binary cross-entropy on (question,
relevant passage, 1) and (question, mined hard negative, 0). Each epoch it reranks every dev
question's top hybrid hits; the base it must beat is what the service does without it: the
retrieval order itself (or, with ``base_model``, the better of that and the base cross-encoder).
A model that does not beat the base on dev is never written as the model to use.

Measured truth (README): a cross-encoder trained from MiniLM's backbone on a few hundred
questions usually *loses* to plain hybrid retrieval; a good reranker needs far more data
(MS MARCO's half-million questions for ``cross-encoder/ms-marco-MiniLM-L-6-v2``).

Example::

    result = tune_reranker(pipeline, load_beir_pairs(Path("scifact")), Path("tuned-ce"))
    result.outcome.verdict
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ingest.embedding import resolve_model_path
from service.pipeline import RagPipeline

from .common import (
    Log,
    Prepared,
    TuneConfig,
    ndcg_at_10,
    outcome_fields,
    prepare,
    training_arguments,
    write_report,
)
from .data import TrainingData
from .embeddings import TuneResult, offline_training
from .selection import BestEpoch, Outcome

MAX_LENGTH = 256


def rerank_dev_scorer(prepared: Prepared, depth: int) -> Callable[[Any], float]:
    """Dev nDCG@10 of a CrossEncoder reranking each dev question's top ``depth`` hybrid hits
    (the documents a reranker would be given; positives retrieval missed stay missed)."""
    data = prepared.data
    pairs: list[tuple[str, str]] = []
    owners: list[tuple[str, str]] = []
    for q in prepared.dev_ids:
        for doc in prepared.rankings.get(q, [])[:depth]:
            pairs.append((data.queries[q], data.texts[doc]))
            owners.append((q, doc))
    qrels = data.qrels(prepared.dev_ids)

    def score(model: Any) -> float:
        scores = model.predict(pairs, batch_size=32, show_progress_bar=False)
        run: dict[str, dict[str, float]] = {q: {} for q in prepared.dev_ids}
        for (q, doc), s in zip(owners, scores, strict=True):
            run[q][doc] = float(s)
        return ndcg_at_10(qrels, run)

    return score


def retrieval_order_dev(prepared: Prepared, depth: int) -> float:
    """Dev nDCG@10 of the hybrid order itself: the service without a reranker."""
    run = {
        q: {d: 1.0 / (r + 1) for r, d in enumerate(prepared.rankings.get(q, [])[:depth])}
        for q in prepared.dev_ids
    }
    return ndcg_at_10(prepared.data.qrels(prepared.dev_ids), run)


def reranker_rows(prepared: Prepared) -> dict[str, list[Any]]:
    """(query, passage, label) rows: 1 for each positive, 0 for each mined hard negative."""
    data = prepared.data
    rows: dict[str, list[Any]] = {"query": [], "passage": [], "label": []}
    for q in prepared.train_ids:
        labelled = [(d, 1.0) for d in data.positives[q]]
        labelled += [(d, 0.0) for d in prepared.negatives.get(q, [])]
        for doc, label in labelled:
            rows["query"].append(data.queries[q])
            rows["passage"].append(data.texts[doc])
            rows["label"].append(label)
    if not any(label == 0.0 for label in rows["label"]):
        raise ValueError("no training rows: no train question has a mined hard negative")
    return rows


def train_reranker(
    backbone: str,
    rows: dict[str, list[Any]],
    score: Callable[[Any], float],
    base: float,
    config: TuneConfig,
    log: Log,
) -> tuple[Any, Outcome]:
    offline_training()
    from datasets import Dataset  # type: ignore[import-untyped]
    from sentence_transformers import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    length = config.max_seq_length or MAX_LENGTH
    model = CrossEncoder(backbone, num_labels=1, max_length=length, device="cpu")
    watch = BestEpoch(
        model, score, base, patience=config.patience, min_gain=config.min_gain, log=log
    )
    with tempfile.TemporaryDirectory(prefix="grounded-tune-") as scratch:
        args = CrossEncoderTrainingArguments(**training_arguments(config, scratch))
        trainer = CrossEncoderTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_dict(rows),
            loss=BinaryCrossEntropyLoss(model),
            callbacks=[watch],
        )
        trainer.train()
    return model, watch.finish()


def tune_reranker(
    pipeline: RagPipeline,
    data: TrainingData,
    out_dir: Path,
    config: TuneConfig | None = None,
    *,
    base_model: str | None = None,
    keep_rejected: bool = False,
    log: Log | None = None,
) -> TuneResult:
    """Mine, train, select; save ``out_dir/model`` only when the reranker wins on dev.

    ``base_model``: a cross-encoder to start from (it must then beat the hybrid order *and*
    that model untouched); by default the embedding model's backbone with a fresh head."""
    config = config or TuneConfig(negatives=4, dev_depth=20)
    log = log or (lambda _m: None)
    started = time.perf_counter()
    prepared = prepare(pipeline, data, config, log)
    depth = config.dev_depth
    score = rerank_dev_scorer(prepared, depth)
    base = retrieval_order_dev(prepared, depth)
    log(f"no reranker (hybrid order): dev nDCG@10 {base:.4f}")
    backbone = base_model or resolve_model_path(pipeline.settings.embedding_model)
    if base_model:
        from sentence_transformers import CrossEncoder

        untouched = score(CrossEncoder(base_model, max_length=MAX_LENGTH, device="cpu"))
        log(f"base cross-encoder {base_model}: dev nDCG@10 {untouched:.4f}")
        base = max(base, untouched)
    rows = reranker_rows(prepared)
    log(f"training on {len(rows['label'])} pairs for up to {config.epochs} epoch(s)")
    trained_at = time.perf_counter()
    model, outcome = train_reranker(backbone, rows, score, base, config, log)
    train_s = time.perf_counter() - trained_at
    log(outcome.verdict)
    model_dir = rejected_dir = None
    if outcome.kept:
        model_dir = (out_dir / "model").resolve()
        model.save_pretrained(str(model_dir))
    elif keep_rejected:
        rejected_dir = (out_dir / "rejected").resolve()
        model.save_pretrained(str(rejected_dir))
    report = {
        "kind": "reranker",
        "dataset": str(data.path),
        "backbone": backbone,
        "base": f"hybrid order{' or ' + base_model if base_model else ''}",
        "train_questions": len(prepared.train_ids),
        "train_pairs": len(rows["label"]),
        "dev_questions": len(prepared.dev_ids),
        "dev_ids": prepared.dev_ids,
        "dev_selection": f"nDCG@10 of each dev question's top {depth} hybrid hits, reranked",
        **outcome_fields(
            config,
            outcome.to_dict(),
            model_dir,
            rejected_dir,
            prepared.timings,
            train_s,
            started,
        ),
    }
    write_report(out_dir, report)
    return TuneResult(outcome, prepared, model_dir, rejected_dir, report)
