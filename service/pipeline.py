"""The one place where the service is assembled from settings.

The API, the CLI and (later) the evals call the same :class:`RagPipeline`, so what is measured
is what is served.

Example::

    pipeline = RagPipeline.from_settings(Settings())
    result = pipeline.search(SearchParams("what is grounded?", collection="docs"))
    pipeline.close()
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from ingest.build import build_embedder, build_ingestor
from ingest.documents import Document
from ingest.embedding import Embedder
from ingest.index import VectorIndex, open_index
from ingest.pipeline import IngestReport, ProgressFn
from ingest.settings import Settings

from .generation import Answer, ExtractiveGenerator, Generator
from .rerank import CrossEncoderReranker, Reranker
from .retrieval import HybridRetriever, RetrievalResult, Retriever, SearchParams


class RerankerNotConfigured(ValueError):
    pass


def build_reranker(settings: Settings) -> Reranker | None:
    if settings.reranker == "cross-encoder":
        return CrossEncoderReranker(
            settings.reranker_model,
            batch_size=settings.reranker_batch_size,
            max_length=settings.reranker_max_length,
            device=settings.embedding_device,
        )
    return None


@dataclass
class QueryResult:
    retrieval: RetrievalResult
    answer: Answer
    timings: dict[str, float]


class RagPipeline:
    """Retrieval, answer generation and ingest over one index and one embedder."""

    def __init__(
        self,
        settings: Settings,
        index: VectorIndex,
        embedder: Embedder,
        retriever: Retriever | None = None,
        generator: Generator | None = None,
        reranker: Reranker | None = None,
    ) -> None:
        self.settings = settings
        self.index = index
        self.embedder = embedder
        self.retriever = retriever or HybridRetriever(index, embedder, settings)
        self.generator = generator or ExtractiveGenerator(embedder)
        self.reranker = reranker
        # One writer at a time: concurrent ingests of the same document must not interleave.
        self._write_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, index: VectorIndex | None = None) -> RagPipeline:
        embedder = build_embedder(settings)
        reranker = build_reranker(settings)
        return cls(settings, index or open_index(settings), embedder, reranker=reranker)

    def search(self, params: SearchParams) -> RetrievalResult:
        """Retrieve; with ``params.rerank``, retrieve more candidates and rerank them to top_k."""
        if not params.rerank:
            return self.retriever.retrieve(params)
        if self.reranker is None:
            raise RerankerNotConfigured(
                "reranking was requested but no reranker is configured "
                "(set GROUNDED_RERANKER=cross-encoder and GROUNDED_RERANKER_MODEL)"
            )
        candidates = max(params.top_k, self.settings.rerank_candidates)
        result = self.retriever.retrieve(replace(params, top_k=candidates))
        t = time.perf_counter()
        result.chunks = self.reranker.rerank(params.query, result.chunks, params.top_k)
        result.timings["rerank_ms"] = round((time.perf_counter() - t) * 1000, 3)
        return result

    def query(self, params: SearchParams) -> QueryResult:
        started = time.perf_counter()
        retrieval = self.search(params)
        t = time.perf_counter()
        answer = self.generator.generate(params.query, retrieval)
        timings = dict(retrieval.timings)
        timings["generate_ms"] = round((time.perf_counter() - t) * 1000, 3)
        timings["total_ms"] = round((time.perf_counter() - started) * 1000, 3)
        return QueryResult(retrieval, answer, timings)

    def ingest(
        self, documents: Iterable[Document], collection: str, progress: ProgressFn | None = None
    ) -> IngestReport:
        with self._write_lock:
            ingestor = build_ingestor(self.settings, self.index, self.embedder, collection)
            return ingestor.ingest(documents, progress)

    def delete(self, doc_ids: Sequence[str], collection: str) -> int:
        with self._write_lock:
            ingestor = build_ingestor(self.settings, self.index, self.embedder, collection)
            return ingestor.delete(doc_ids)

    def document_sources(self, collection: str) -> dict[str, str]:
        return build_ingestor(
            self.settings, self.index, self.embedder, collection
        ).document_sources()

    def close(self) -> None:
        self.index.close()
