"""Retrieval evaluation: BEIR queries through the service's own retrieval code.

The corpus is ingested into a collection named after the dataset, the embedding model and the
chunking settings. Ingest is idempotent, so a second run only re-checks hashes (seconds) and the
index is in effect cached. Chunk hits are aggregated to documents by their best chunk score.

Example::

    dataset = load_beir(Path("../shared/datasets/scifact"))
    report = evaluate_retrieval(pipeline, dataset, ["sparse", "dense", "hybrid-rrf"])
    report["hybrid-rrf"]["ndcg@10"]
"""

from __future__ import annotations

import hashlib
import re
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ingest.build import (
    backend_on_this_device,
    bm25_params,
    build_chunker,
    build_embedder,
    build_ingestor,
)
from ingest.documents import Document
from ingest.embedding import Embedder, SentenceTransformerEmbedder
from ingest.pipeline import IngestReport
from ingest.settings import EmbeddingSettings
from service.pipeline import RagPipeline
from service.retrieval import RetrievalResult, SearchParams, doc_ranking

from .datasets import BeirDataset
from .metrics import mean_metrics, per_query_metrics
from .significance import mean_interval

MODES: dict[str, dict[str, Any]] = {
    "sparse": {"mode": "sparse"},
    "dense": {"mode": "dense"},
    "hybrid-rrf": {"mode": "hybrid", "fusion": "rrf"},
    "hybrid-dbsf": {"mode": "hybrid", "fusion": "dbsf"},
}
# BM25 k1 and b of eval caches keyed before the weighting was part of the key.
UNKEYED_BM25 = (1.2, 0.75)
# Chunks fetched per query: enough distinct documents for Recall@100 after aggregation. Each
# leg still prefetches only ``prefetch_limit`` candidates, as a request of the default top_k does:
# a deeper prefetch changes DBSF's normalisation, and so the ranking (SciFact test nDCG@10 0.7325
# with 100, 0.7377 with 300), and the eval must measure what is served.
CHUNK_DEPTH = 300

Tick = Callable[[int], None]


def collection_for(name: str, path: Path, pipeline: RagPipeline) -> str:
    """One collection per corpus, embedding model and chunking: the eval's index cache."""
    # The chunker's signature names how chunks are cut (and its size and overlap), so a cache
    # built by another chunker is never reused, nor rebuilt in place.
    signature = build_chunker(pipeline.settings, pipeline.embedder).signature
    key = f"{path.resolve()}|{pipeline.embedder.name}|{signature}"
    # Documents embedded by another runtime than the queries (as `grounded ingest` does) are
    # other vectors; caches whose documents were embedded like the queries keep their key.
    documents = getattr(document_embedder(pipeline), "backend", None)
    if documents != getattr(pipeline.embedder, "backend", None):
        key += f"|documents:{documents}"
    # A collection keeps the BM25 weighting it was created with, so another k1/b needs its own.
    # The weighting every cache had before the key named it stays out of the key: those caches
    # stay valid.
    bm25 = bm25_params(pipeline.settings)
    if (bm25.k1, bm25.b) != UNKEYED_BM25:
        key += f"|bm25:{bm25.k1}:{bm25.b}"
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)[:32]
    return f"eval-{slug}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def index_corpus(
    pipeline: RagPipeline,
    name: str,
    path: Path,
    corpus: list[Document],
    progress: Callable[[int, int], None] | None = None,
) -> tuple[str, IngestReport]:
    """Ingest (or, when unchanged, just re-check) a corpus into its cache collection, with the
    document embedder `grounded ingest` would use."""
    collection = collection_for(name, path, pipeline)
    ingestor = build_ingestor(
        pipeline.settings, pipeline.index, document_embedder(pipeline), collection, bulk=True
    )
    return collection, ingestor.ingest(corpus, progress)


# Loaded once per process and shared by every candidate pipeline of a comparison.
_DOCUMENT_EMBEDDERS: dict[tuple[Any, ...], Embedder] = {}


def document_embedder(pipeline: RagPipeline) -> Embedder:
    """What `grounded ingest` embeds documents with for this pipeline's settings: the model on
    ``ingest_embedding_backend`` (queries stay on ``embedding_backend``), so an eval index holds
    the vectors a served one does (SciFact test nDCG@10: 0.7325 with the query backend's
    vectors, 0.7353 with these).

    A pipeline given an embedder its settings do not describe (a test's, a caller's) embeds
    documents with that embedder."""
    settings, own = pipeline.settings, pipeline.embedder
    if not isinstance(own, SentenceTransformerEmbedder) or own.name != settings.embedding_model:
        return own
    wanted = settings.ingest_embedding_backend
    if wanted is None or backend_on_this_device(settings, wanted) == own.backend:
        return own  # (on a GPU both are torch: no second model)
    key = tuple(getattr(settings, name) for name in EmbeddingSettings.model_fields)
    if key not in _DOCUMENT_EMBEDDERS:
        _DOCUMENT_EMBEDDERS[key] = build_embedder(settings, documents=True)
    return _DOCUMENT_EMBEDDERS[key]


def prepare_index(
    pipeline: RagPipeline, dataset: BeirDataset, progress: Callable[[int, int], None] | None = None
) -> tuple[str, IngestReport]:
    return index_corpus(pipeline, dataset.name, dataset.path, dataset.corpus, progress)


def query_vectors(embedder: Embedder, queries: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Every query's embedding, computed once per dataset and reused by every candidate.

    One ``embed_query`` call per question, as the service embeds it: a batch would pad the
    questions together, and the int8 backend quantises activations per batch, so a batched
    vector is not quite the one a request gets (nDCG moved by 0.001 on SciFact)."""
    return {qid: embedder.embed_query(text) for qid, text in queries.items()}


def run_queries(
    pipeline: RagPipeline,
    dataset: BeirDataset,
    collection: str,
    mode: str,
    tick: Tick | None = None,
    warnings: list[str] | None = None,
    **overrides: Any,
) -> tuple[dict[str, dict[str, float]], list[float]]:
    """``{query_id: {doc_id: score}}`` for one mode, and each query's latency in ms.

    ``warnings`` collects what stages fell back (an LLM transform or reranker that failed)."""
    options = {**MODES[mode], **overrides}
    run: dict[str, dict[str, float]] = {}
    latencies: list[float] = []
    for qid, text in dataset.queries.items():
        started = time.perf_counter()
        params = SearchParams(
            text,
            collection=collection,
            top_k=CHUNK_DEPTH,
            prefetch_limit=pipeline.settings.prefetch_limit,
            **options,
        )
        result = _search_as_served(pipeline, params)
        latencies.append((time.perf_counter() - started) * 1000)
        run[qid] = doc_ranking(result.chunks)
        if warnings is not None:
            warnings.extend(result.warnings)
        if tick:
            tick(1)
    return run, latencies


def _search_as_served(pipeline: RagPipeline, params: SearchParams) -> RetrievalResult:
    """``pipeline.search``, except that a reranker sees what a request's reranker sees.

    A request reranks ``rerank_candidates`` chunks (at least ``top_k``); the eval's deep list
    would hand it all ``CHUNK_DEPTH`` (slow, and not what is served). So the reranked head is a
    request's own result and the rest of the deep list follows in retrieval order; the scores
    become positions, since a reranker's scores and fused scores share no scale."""
    if not params.rerank:
        return pipeline.search(params)
    s = pipeline.settings
    head = pipeline.search(replace(params, top_k=max(s.rerank_candidates, s.top_k)))
    deep = pipeline.search(replace(params, rerank=False))
    seen = {c.id for c in head.chunks}
    merged = [*head.chunks, *(c for c in deep.chunks if c.id not in seen)]
    head.chunks = [
        replace(c, rank=rank, score=float(len(merged) - rank))
        for rank, c in enumerate(merged, start=1)
    ]
    head.warnings += deep.warnings
    return head


def score_run(
    qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], latencies: list[float]
) -> tuple[dict[str, float], float]:
    """Ranking metrics of a run (see :func:`run_queries`), with the 95% bootstrap interval of
    its nDCG@10 over queries (``ndcg@10_low`` / ``ndcg@10_high``), and its median query latency
    in ms."""
    per_query = per_query_metrics(qrels, run)
    scores = mean_metrics(per_query)
    ci = mean_interval([q["ndcg@10"] for q in per_query.values()])
    scores["ndcg@10_low"], scores["ndcg@10_high"] = ci.low, ci.high
    return scores, round(statistics.median(latencies), 2)


def evaluate_retrieval(
    pipeline: RagPipeline,
    dataset: BeirDataset,
    modes: Sequence[str],
    collection: str | None = None,
    tick: Tick | None = None,
) -> dict[str, dict[str, float]]:
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
    collection = collection or collection_for(dataset.name, dataset.path, pipeline)
    report: dict[str, dict[str, float]] = {}
    for mode in modes:
        run, latencies = run_queries(pipeline, dataset, collection, mode, tick)
        scores, latency_p50 = score_run(dataset.qrels, run, latencies)
        scores["latency_p50_ms"] = latency_p50
        scores["queries"] = len(dataset.queries)
        report[mode] = scores
    return report
