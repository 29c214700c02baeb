"""Hybrid retrieval: one Qdrant query, a dense prefetch and a BM25 prefetch fused in the engine.

Modes: ``hybrid`` (RRF with configurable k and per-leg weights, or DBSF), ``dense`` and
``sparse``. Published BEIR results show fusion losing to dense alone on some corpora, so every
mode stays selectable per request.

Example::

    retriever = HybridRetriever(index, embedder, settings)
    result = retriever.retrieve(SearchParams("what is BM25?", collection="docs", top_k=5))
    for chunk in result.chunks: print(chunk.rank, chunk.doc_id, chunk.score)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ingest.embedding import Embedder
from ingest.index import FieldFilter, Hit, SearchQuery, VectorIndex, require_manifest
from ingest.index.base import Fusion, Mode
from ingest.names import DEFAULT_TENANT
from ingest.payload import StoredChunk
from ingest.settings import Settings
from ingest.sparse import Bm25Encoder


@dataclass(frozen=True)
class SearchParams:
    query: str
    collection: str
    top_k: int = 10
    mode: Mode = "hybrid"
    fusion: Fusion = "dbsf"  # Settings.fusion's default, chosen in #14 (README, measuring)
    filters: tuple[FieldFilter, ...] = ()
    rrf_k: int | None = None
    dense_weight: float | None = None
    sparse_weight: float | None = None
    rerank: bool = False
    multi_query: int = 0  # LLM rephrasings fused by RRF (0 = off)
    hyde: bool = False  # dense leg from an LLM-written hypothetical passage
    tenant: str = DEFAULT_TENANT  # whose chunks are searched: enforced inside Qdrant
    # Candidates per leg before fusion; None = the setting, at least top_k. The eval fixes it to
    # the setting so that its deep result lists begin with what a request of the default
    # top_k gets (DBSF normalises over the prefetched lists).
    prefetch_limit: int | None = None


@dataclass(frozen=True)
class RetrievedChunk:
    rank: int
    score: float
    id: str
    doc_id: str
    chunk_index: int
    title: str
    text: str
    source: str
    start: int
    end: int
    headings: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    # Cosine similarity of the question and this chunk's dense vector, whatever the mode, filled
    # when the abstention floor is set: fused and BM25 scores have no fixed scale.
    similarity: float | None = None
    # Where each whole sentence of ``text`` starts (see ingest.payload); None for points written
    # before ingest stored them.
    sentences: list[int] | None = None

    @classmethod
    def from_hit(cls, rank: int, hit: Hit, similarity: float | None = None) -> RetrievedChunk:
        stored = StoredChunk.from_payload(hit.payload)
        return cls(
            rank=rank,
            score=hit.score,
            id=hit.id,
            doc_id=stored.doc_id,
            chunk_index=stored.chunk_index,
            title=stored.title,
            text=stored.text,
            source=stored.source,
            start=stored.start,
            end=stored.end,
            headings=stored.headings,
            metadata=stored.metadata,
            similarity=similarity,
            sentences=stored.sentences,
        )


@dataclass
class RetrievalResult:
    chunks: list[RetrievedChunk]
    timings: dict[str, float]
    query_vector: np.ndarray | None = None
    transforms: dict[str, Any] = field(default_factory=dict)  # rephrasings, HyDE passage
    warnings: list[str] = field(default_factory=list)  # stages that fell back


class Retriever(Protocol):
    def retrieve(
        self,
        params: SearchParams,
        *,
        dense_vector: np.ndarray | None = None,
        query_vector: np.ndarray | None = None,
    ) -> RetrievalResult: ...


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)


class HybridRetriever:
    """Dense + BM25 retrieval over a :class:`~ingest.index.base.VectorIndex`.

    Args:
        index: the Qdrant adapter.
        embedder: must be the model the collection was built with (checked per query).
        settings: defaults for RRF k, leg weights and the prefetch depth.
    """

    def __init__(self, index: VectorIndex, embedder: Embedder, settings: Settings) -> None:
        self.index = index
        self.embedder = embedder
        self.settings = settings
        self._bm25: dict[str, Bm25Encoder] = {}

    def _sparse_encoder(self, collection: str) -> Bm25Encoder:
        manifest = require_manifest(self.index, collection)
        manifest.check_model(collection, self.embedder.name, self.embedder.dimension)
        encoder = self._bm25.get(collection)
        if encoder is None or encoder.params != manifest.bm25:
            encoder = self._bm25[collection] = Bm25Encoder(manifest.bm25)
        return encoder

    def retrieve(
        self,
        params: SearchParams,
        *,
        dense_vector: np.ndarray | None = None,
        query_vector: np.ndarray | None = None,
    ) -> RetrievalResult:
        """Search; ``dense_vector`` replaces the question's embedding in the dense leg (HyDE),
        and ``query_vector`` is the question's embedding when the caller already has it."""
        started = time.perf_counter()
        timings: dict[str, float] = {}
        sparse_encoder = self._sparse_encoder(params.collection)
        dense = sparse = question = None
        wants_similarity = self.settings.abstain_min_similarity is not None
        if query_vector is not None:
            question = query_vector
        elif params.mode in ("hybrid", "dense") or wants_similarity:
            t = time.perf_counter()
            question = self.embedder.embed_query(params.query)
            timings["embed_ms"] = _ms(t)
        if params.mode in ("hybrid", "dense"):
            dense = question if dense_vector is None else dense_vector
        if params.mode in ("hybrid", "sparse"):
            t = time.perf_counter()
            sparse = sparse_encoder.embed_query(params.query)
            timings["bm25_ms"] = _ms(t)
        s = self.settings
        query = SearchQuery(
            dense=dense,
            sparse=sparse,
            mode=params.mode,
            fusion=params.fusion,
            limit=params.top_k,
            prefetch_limit=params.prefetch_limit or max(s.prefetch_limit, params.top_k),
            rrf_k=params.rrf_k or s.rrf_k,
            dense_weight=params.dense_weight or s.dense_weight,
            sparse_weight=params.sparse_weight or s.sparse_weight,
            filters=params.filters,
            with_dense=wants_similarity,
            tenant=params.tenant,
        )
        t = time.perf_counter()
        hits = (
            self.index.search(params.collection, query) if not _empty(sparse, params.mode) else []
        )
        timings["search_ms"] = _ms(t)
        chunks = [
            RetrievedChunk.from_hit(rank, hit, _cosine(question, hit.dense))
            for rank, hit in enumerate(hits, start=1)
        ]
        timings["retrieval_ms"] = _ms(started)
        return RetrievalResult(chunks, timings, question)


def _cosine(query: np.ndarray | None, vector: list[float] | None) -> float | None:
    if query is None or vector is None:
        return None
    v = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(v) * np.linalg.norm(query))
    return round(float(v @ query) / norm, 6) if norm else None


def _empty(sparse: Any, mode: str) -> bool:
    """A sparse-only query whose words are all stopwords matches nothing; skip the engine call."""
    return mode == "sparse" and sparse is not None and not sparse.indices


def doc_ranking(chunks: Sequence[RetrievedChunk]) -> dict[str, float]:
    """Chunk hits aggregated to documents, max score per document (BEIR's results shape)."""
    scores: dict[str, float] = {}
    for chunk in chunks:
        if chunk.score > scores.get(chunk.doc_id, float("-inf")):
            scores[chunk.doc_id] = chunk.score
    return scores
