"""What both tuners share: the prepared data (index, dev split, mined rankings), the fast
grounded-retrieval evaluation used for reporting, and the report file.

Example::

    prepared = prepare(pipeline, data, TuneConfig())
    prepared.train_ids, prepared.dev_ids, prepared.negatives["q1"]
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.pipeline import RagPipeline
from service.retrieval import SearchParams, doc_ranking

from ..datasets import BeirDataset
from ..metrics import ranking_metrics
from ..retrieval import CHUNK_DEPTH, MODES, index_corpus, query_vectors
from .data import TrainingData, split_dev
from .mining import hard_negatives, rank_documents

Log = Callable[[str], None]
REPORT = "tuning.json"


@dataclass
class TuneConfig:
    """Training and selection settings shared by both tuners.

    Args:
        epochs: at most this many epochs (early stopping may end sooner).
        batch_size: examples per step (for embeddings also the in-batch negatives).
        learning_rate: AdamW learning rate.
        dev_share / dev_min / seed: the dev hold-out (see :func:`~eval.tuning.data.split_dev`).
        skip / negatives: hard negatives per question, after skipping the top ``skip``.
        depth: documents per question mined from hybrid retrieval.
        patience: epochs without a dev gain before training stops.
        min_gain: how much better than the base on dev a tuned model must be to be kept.
        max_seq_length: tokens per text while training and scoring on dev (None: the
            model's own); shorter is cheaper on a CPU. A saved embedding model keeps its own
            length (what retrieval uses).
        dev_depth: base hybrid hits per dev question that are scored on dev: the reranker's
            candidates, or (embeddings) the hits that join the dev pool.
        pool_extra: documents of the rest of the corpus added to the embeddings' dev pool.
    """

    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 2e-5
    dev_share: float = 0.15
    dev_min: int = 20
    seed: int = 13
    skip: int = 2
    negatives: int = 1
    depth: int = 30
    patience: int = 1
    min_gain: float = 0.0
    max_seq_length: int | None = None
    dev_depth: int = 10
    pool_extra: int = 300

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2 or self.learning_rate <= 0:
            raise ValueError("epochs must be >= 1, batch size >= 2, learning rate > 0")
        if self.depth < self.skip + self.negatives:
            raise ValueError("depth must cover skip + negatives")
        if not 1 <= self.dev_depth <= self.depth or self.pool_extra < 0:
            raise ValueError("dev depth must be between 1 and depth; pool extra >= 0")


@dataclass
class Prepared:
    """The data a tuner trains and selects on; the test split is never part of it."""

    data: TrainingData
    collection: str
    train_ids: list[str]
    dev_ids: list[str]
    rankings: dict[str, list[str]]  # base hybrid retrieval, top ``depth`` documents
    negatives: dict[str, list[str]]  # train questions only
    timings: dict[str, float] = field(default_factory=dict)


def prepare(pipeline: RagPipeline, data: TrainingData, config: TuneConfig, log: Log) -> Prepared:
    """Index the corpus (cached like every eval index), split off dev, mine hard negatives."""
    started = time.perf_counter()
    log(f"indexing {len(data.documents)} documents (cached after the first run)")
    collection, _ = index_corpus(pipeline, data.name, data.path, data.documents)
    indexed = time.perf_counter()
    train_ids, dev_ids = split_dev(
        list(data.queries), share=config.dev_share, minimum=config.dev_min, seed=config.seed
    )
    log(f"{len(train_ids)} train / {len(dev_ids)} dev questions; mining hard negatives")
    rankings = rank_documents(pipeline, collection, data.queries, depth=config.depth)
    negatives = hard_negatives(
        {q: rankings[q] for q in train_ids},
        data.positives,
        skip=config.skip,
        per_query=config.negatives,
    )
    timings = {
        "index_s": round(indexed - started, 1),
        "mine_s": round(time.perf_counter() - indexed, 1),
    }
    return Prepared(data, collection, train_ids, dev_ids, rankings, negatives, timings)


def training_arguments(config: TuneConfig, output_dir: str) -> dict[str, Any]:
    """What both trainers are given: offline, on the CPU, nothing saved, logged or pushed (the
    best epoch is kept by :class:`~eval.tuning.selection.BestEpoch`, not by checkpoints)."""
    return {
        "output_dir": output_dir,
        "num_train_epochs": config.epochs,
        "per_device_train_batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "warmup_steps": 0.1,  # a float: the share of steps (Transformers v5)
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_strategy": "no",
        "report_to": "none",
        "push_to_hub": False,
        "disable_tqdm": True,
        "seed": config.seed,
        "use_cpu": True,
        "dataloader_num_workers": 0,
    }


def ndcg_at_10(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> float:
    return ranking_metrics(qrels, run)["ndcg@10"]


def sample_ids(ids: Sequence[str], n: int, seed: int) -> list[str]:
    ordered = sorted(ids)
    random.Random(seed).shuffle(ordered)
    return ordered[:n]


def evaluate_modes(
    pipeline: RagPipeline,
    dataset: BeirDataset,
    collection: str,
    modes: Sequence[str] = ("dense", "hybrid-rrf", "hybrid-dbsf"),
    **overrides: Any,
) -> dict[str, float]:
    """nDCG@10 per retrieval mode through the service's retriever (queries embedded in one
    batch, as :mod:`eval.compare` does), or through ``pipeline.search`` when reranking."""
    vectors = query_vectors(pipeline.embedder, dataset.queries)
    scores: dict[str, float] = {}
    for mode in modes:
        run: dict[str, dict[str, float]] = {}
        for qid, text in dataset.queries.items():
            params = SearchParams(
                text, collection=collection, top_k=CHUNK_DEPTH, **{**MODES[mode], **overrides}
            )
            if params.rerank:
                chunks = pipeline.search(params).chunks
            else:
                chunks = pipeline.retriever.retrieve(params, query_vector=vectors[qid]).chunks
            run[qid] = doc_ranking(chunks)
        scores[mode] = round(ndcg_at_10(dataset.qrels, run), 4)
    return scores


def subset(dataset: BeirDataset, qids: Sequence[str], split: str) -> BeirDataset:
    keep = [q for q in qids if q in dataset.qrels]
    return BeirDataset(
        dataset.name,
        dataset.path,
        dataset.corpus,
        {q: dataset.queries[q] for q in keep},
        {q: dataset.qrels[q] for q in keep},
        split,
    )


def outcome_fields(
    config: TuneConfig,
    outcome: Mapping[str, Any],
    model_dir: Path | None,
    rejected_dir: Path | None,
    timings: Mapping[str, float],
    train_s: float,
    started: float,
) -> dict[str, Any]:
    """The part of ``tuning.json`` both commands share: how negatives were mined, the config,
    the dev verdict, where the model went and how long it all took."""
    return {
        "negatives": f"hybrid top {config.depth}, positives excluded, first {config.skip} "
        f"skipped, {config.negatives} per question",
        "config": vars(config),
        **outcome,
        "model": str(model_dir) if model_dir else None,
        "rejected": str(rejected_dir) if rejected_dir else None,
        "timings": {
            **timings,
            "train_s": round(train_s, 1),
            "total_s": round(time.perf_counter() - started, 1),
        },
    }


def write_report(out_dir: Path, report: Mapping[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path


def read_report(model_dir: Path) -> dict[str, Any] | None:
    """The ``tuning.json`` written next to a tuned model (its parent folder), if any."""
    for folder in (Path(model_dir), Path(model_dir).parent):
        path = folder / REPORT
        if path.is_file():
            try:
                return dict(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                return None
    return None
