"""``grounded tune embeddings``: fine-tune the embedding model on your questions.

sentence-transformers training with MultipleNegativesRankingLoss: each (question, relevant
passage, hard negative) row, the other rows' passages of the batch serving as further negatives.
Hard negatives come from grounded's own hybrid retrieval (:mod:`eval.tuning.mining`). After each
epoch the model is scored on the dev hold-out: nDCG@10 of dense retrieval over a *dev pool* (the
dev questions' positives, their top base-retrieval hits and a seeded sample of the rest of the
corpus), which costs one embedding of a few thousand passages per epoch instead of the whole
corpus. Training stops early when dev stops improving; the best epoch is kept only if it beats
the base model on the same pool (:func:`eval.tuning.selection.keep`).

Example::

    pipeline = RagPipeline.from_settings(Settings())
    result = tune_embeddings(pipeline, load_beir_pairs(Path("scifact")), Path("tuned"))
    result.outcome.kept, result.model_dir     # model_dir is None when the base was kept
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ingest.embedding import resolve_model_path
from service.pipeline import RagPipeline

from .common import (
    Log,
    Prepared,
    TuneConfig,
    ndcg_at_10,
    outcome_fields,
    prepare,
    sample_ids,
    training_arguments,
    write_report,
)
from .data import TrainingData
from .selection import BestEpoch, Outcome

# The dev pool is each dev question's positives and top ``dev_depth`` base hits, plus
# ``pool_extra`` documents of the rest of the corpus: distractors the base retrieval did not rank
# high, so a tuned model cannot look good just by pushing base hits down. Embedding the whole
# corpus after every epoch is not affordable on a couple of CPU cores.


def offline_training() -> None:
    """Training must never reach the hub (this machine and CI have no access to it).

    Every model here is a local path, nothing is pushed and ``report_to`` is ``none``; the
    variables are a second lock for whatever reads them later (the hub library reads them when
    first imported, so they cannot switch an already running process offline)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def dev_pool(prepared: Prepared, depth: int = 10, extra: int = 300) -> dict[str, str]:
    """Passages the dev questions are ranked against: positives, base top hits, a sample."""
    data = prepared.data
    ids = {d for q in prepared.dev_ids for d in data.positives[q]}
    ids |= {d for q in prepared.dev_ids for d in prepared.rankings.get(q, [])[:depth]}
    rest = [d for d in data.texts if d not in ids]
    ids |= set(sample_ids(rest, extra, prepared_seed(prepared)))
    return {d: data.texts[d] for d in sorted(ids)}


def prepared_seed(prepared: Prepared) -> int:
    """The pool sample's seed: fixed by the split's sizes, so one split always gets one pool."""
    return len(prepared.train_ids) * 7919 + len(prepared.dev_ids)


def dense_dev_scorer(
    data: TrainingData,
    dev_ids: list[str],
    pool: dict[str, str],
    *,
    query_prefix: str = "",
    passage_prefix: str = "",
) -> Callable[[Any], float]:
    """Dev nDCG@10 of a SentenceTransformer: cosine ranking of the pool per dev question."""
    ids = list(pool)
    passages = [passage_prefix + pool[d] for d in ids]
    questions = [query_prefix + data.queries[q] for q in dev_ids]
    qrels = data.qrels(dev_ids)

    def score(model: Any) -> float:
        def encode(texts: list[str]) -> np.ndarray:
            return np.asarray(
                model.encode(
                    texts,
                    batch_size=64,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
            )

        sims = encode(questions) @ encode(passages).T
        top = np.argsort(-sims, axis=1)[:, :100]
        run = {q: {ids[j]: float(sims[i, j]) for j in top[i]} for i, q in enumerate(dev_ids)}
        return ndcg_at_10(qrels, run)

    return score


def training_rows(
    prepared: Prepared, *, query_prefix: str = "", passage_prefix: str = ""
) -> dict[str, list[str]]:
    """(anchor, positive, negative) columns: one row per relevant pair of a train question
    with a mined negative (rows are paired with the question's negatives in turn)."""
    data = prepared.data
    rows: dict[str, list[str]] = {"anchor": [], "positive": [], "negative": []}
    for q in prepared.train_ids:
        negatives = prepared.negatives.get(q, [])
        if not negatives:
            continue
        for i, doc in enumerate(data.positives[q]):
            rows["anchor"].append(query_prefix + data.queries[q])
            rows["positive"].append(passage_prefix + data.texts[doc])
            rows["negative"].append(passage_prefix + data.texts[negatives[i % len(negatives)]])
    if not rows["anchor"]:
        raise ValueError("no training rows: no train question has a mined hard negative")
    return rows


def train_embeddings(
    base_model: str,
    rows: dict[str, list[str]],
    score: Callable[[Any], float],
    config: TuneConfig,
    log: Log,
) -> tuple[Any, Outcome]:
    """Train a copy of ``base_model``; returns it with its best epoch's weights and the outcome."""
    offline_training()
    from datasets import Dataset  # type: ignore[import-untyped]
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model = SentenceTransformer(base_model, device="cpu")
    own_length = model.max_seq_length
    # Base and tuned are scored at the same length, so the comparison stays fair.
    model.max_seq_length = config.max_seq_length or own_length
    base = score(model)
    log(f"base model: dev nDCG@10 {base:.4f}")
    watch = BestEpoch(
        model, score, base, patience=config.patience, min_gain=config.min_gain, log=log
    )
    with tempfile.TemporaryDirectory(prefix="grounded-tune-") as scratch:
        args = SentenceTransformerTrainingArguments(
            **training_arguments(config, scratch),
            # identical passages in one batch would be "negatives" of each other
            batch_sampler=BatchSamplers.NO_DUPLICATES,
        )
        trainer = SentenceTransformerTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_dict(rows),
            loss=MultipleNegativesRankingLoss(model),
            callbacks=[watch],
        )
        trainer.train()
    outcome = watch.finish()
    model.max_seq_length = own_length
    return model, outcome


@dataclass
class TuneResult:
    outcome: Outcome
    prepared: Prepared
    model_dir: Path | None  # the kept model, None when the base was kept
    rejected_dir: Path | None  # the losing model, only when asked to keep it for inspection
    report: dict[str, Any]


def tune_embeddings(
    pipeline: RagPipeline,
    data: TrainingData,
    out_dir: Path,
    config: TuneConfig | None = None,
    *,
    keep_rejected: bool = False,
    log: Log | None = None,
) -> TuneResult:
    """Mine, train, select; save ``out_dir/model`` only when the tuned model wins on dev.

    ``out_dir/tuning.json`` records the data, the split sizes, the negatives rule, every epoch's
    dev score and the verdict. A losing model goes to ``out_dir/rejected`` only with
    ``keep_rejected`` (for inspection or the ladder); it is never written as ``model``.
    """
    config = config or TuneConfig()
    log = log or (lambda _m: None)
    started = time.perf_counter()
    settings = pipeline.settings
    prepared = prepare(pipeline, data, config, log)
    pool = dev_pool(prepared, config.dev_depth, config.pool_extra)
    log(f"dev pool: {len(pool)} passages")
    score = dense_dev_scorer(
        data,
        prepared.dev_ids,
        pool,
        query_prefix=settings.query_prefix,
        passage_prefix=settings.passage_prefix,
    )
    rows = training_rows(
        prepared, query_prefix=settings.query_prefix, passage_prefix=settings.passage_prefix
    )
    log(f"training on {len(rows['anchor'])} rows for up to {config.epochs} epoch(s)")
    trained_at = time.perf_counter()
    model, outcome = train_embeddings(
        resolve_model_path(settings.embedding_model), rows, score, config, log
    )
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
        "kind": "embeddings",
        "dataset": str(data.path),
        "base_model": settings.embedding_model,
        "train_questions": len(prepared.train_ids),
        "train_rows": len(rows["anchor"]),
        "dev_questions": len(prepared.dev_ids),
        "dev_ids": prepared.dev_ids,
        "dev_selection": f"dense nDCG@10 over a pool of {len(pool)} passages (positives, top "
        f"{config.dev_depth} base hits, {config.pool_extra} others)",
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


def tuned_pipeline(pipeline: RagPipeline, model_path: Path) -> RagPipeline:
    """The same settings and index with the embedding model swapped for ``model_path``.

    Its collections are new ones: eval collections are keyed on the model name (here the
    absolute path), and every collection's manifest records the model it was built with."""
    from ingest.build import build_embedder

    settings = type(pipeline.settings).model_validate(
        {**pipeline.settings.model_dump(), "embedding_model": str(Path(model_path).resolve())}
    )
    return RagPipeline(settings, pipeline.index, build_embedder(settings))


def compare_splits(
    base: RagPipeline,
    tuned: RagPipeline,
    splits: dict[str, Any],
    log: Log,
    modes: tuple[str, ...] = ("dense", "hybrid-rrf", "hybrid-dbsf"),
) -> dict[str, dict[str, dict[str, float]]]:
    """nDCG@10 per split and mode, base vs tuned, with grounded's retrieval on full indexes.

    ``splits`` maps a label to a :class:`~eval.datasets.BeirDataset` (all on one corpus)."""
    from ..retrieval import prepare_index
    from .common import evaluate_modes

    figures: dict[str, dict[str, dict[str, float]]] = {}
    for label, pipe in (("base", base), ("tuned", tuned)):
        first = next(iter(splits.values()))
        log(f"indexing {first.name} with the {label} model (cached after the first run)")
        started = time.perf_counter()
        collection, _ = prepare_index(pipe, first)
        log(f"  indexed in {time.perf_counter() - started:.0f} s")
        figures[label] = {
            split: evaluate_modes(pipe, dataset, collection, modes)
            for split, dataset in splits.items()
        }
    return figures
