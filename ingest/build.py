"""Assembles ingest components from :class:`~ingest.settings.Settings` (the one place that does)."""

from __future__ import annotations

import logging
from functools import partial

from .chunk_pool import may_start_processes
from .chunking import TokenChunker
from .embedding import (
    Embedder,
    EmbeddingCacheError,
    SentenceTransformerEmbedder,
    cached_export,
    on_gpu,
)
from .index import VectorIndex, open_index
from .index.process import ProcessIndex
from .pipeline import Ingestor
from .settings import Settings
from .sparse import Bm25Params

logger = logging.getLogger(__name__)


def build_embedder(settings: Settings, *, documents: bool = False) -> SentenceTransformerEmbedder:
    """The embedding model; ``documents`` for a bulk ingest path, which runs it on
    ``ingest_embedding_backend`` (the most chunks/s), falling back to the query backend, with a
    warning, if that backend cannot run this model."""
    wanted = settings.ingest_embedding_backend
    if documents and wanted and wanted != settings.embedding_backend:
        try:
            return _embedder(settings, wanted)
        except EmbeddingCacheError:
            raise  # the cache folder is the problem, and the other backend would meet it too
        except Exception as exc:  # an export this model does not survive
            logger.warning(
                "ingest_embedding_backend %s failed (%s); embedding documents with %s",
                wanted,
                exc,
                settings.embedding_backend,
            )
    return _embedder(settings, settings.embedding_backend)


def prepare_exports(settings: Settings) -> None:
    """Make (or find) the cached exports bulk ingest loads: a worker's pool processes load the
    model on their first task, under the task time limit, where a first-time export (~40 s for
    OpenVINO) would be killed and retried for ever. A backend that cannot be exported is left to
    :func:`build_embedder`'s fallback, with a warning."""
    wanted = (settings.ingest_embedding_backend, settings.embedding_backend)
    for backend in dict.fromkeys(backend_on_this_device(settings, b) for b in wanted if b):
        if backend == "torch":
            continue
        try:
            cached_export(settings.embedding_model, backend, settings.embedding_cache_dir)
        except EmbeddingCacheError:
            raise
        except Exception as exc:
            logger.warning("the %s export failed (%s)", backend, exc)


def backend_on_this_device(settings: Settings, backend: str) -> str:
    """The runtime ``backend`` becomes here: the exported runtimes run on CPU only, so a GPU,
    named or picked automatically, keeps torch."""
    if backend != "torch" and settings.embedding_device != "cpu":
        import torch

        if settings.embedding_device is not None or torch.cuda.is_available():
            return "torch"
    return backend


def _embedder(settings: Settings, backend: str) -> SentenceTransformerEmbedder:
    backend = backend_on_this_device(settings, backend)
    return SentenceTransformerEmbedder(
        settings.embedding_model,
        query_prefix=settings.query_prefix,
        passage_prefix=settings.passage_prefix,
        batch_size=settings.embedding_batch_size,
        device=settings.embedding_device,
        backend=backend,
        cache_dir=settings.embedding_cache_dir,
        threads=settings.embedding_threads,
    )


def build_chunker(settings: Settings, embedder: Embedder) -> TokenChunker:
    # A chunk longer than the model's window would be silently truncated when embedded.
    size = min(settings.chunk_size, embedder.max_tokens)
    return TokenChunker(embedder.tokenizer, chunk_size=size, chunk_overlap=settings.chunk_overlap)


def bm25_params(settings: Settings) -> Bm25Params:
    return Bm25Params(
        k1=settings.bm25_k1,
        b=settings.bm25_b,
        avg_len=settings.bm25_avg_len or Bm25Params.avg_len,
        language=settings.bm25_language,
    )


def build_ingestor(
    settings: Settings,
    index: VectorIndex,
    embedder: Embedder,
    collection: str | None = None,
    tenant: str | None = None,
    *,
    bulk: bool = False,
) -> Ingestor:
    """The ingest pipeline. ``bulk``: it ingests whole corpora (``grounded ingest``, eval's
    indexes), so on a GPU an unset ``ingest_chunk_workers`` starts chunk workers; the service's
    per-request and per-task ingests never do (each ingest would start a pool of its own)."""
    return Ingestor(
        index,
        embedder,
        build_chunker(settings, embedder),
        collection=collection or settings.collection,
        bm25=bm25_params(settings),
        measure_bm25_length=settings.bm25_avg_len is None,
        batch_docs=settings.ingest_batch_docs,
        tenant=tenant or settings.tenant,
        max_metadata_depth=settings.max_metadata_depth,
        max_metadata_bytes=settings.max_metadata_bytes,
        chunk_workers=chunk_workers(settings, embedder, bulk=bulk),
    )


def chunk_workers(settings: Settings, embedder: Embedder, *, bulk: bool) -> int:
    """``ingest_chunk_workers``; unset, on a bulk ingest that embeds on a GPU in a process that
    may start processes, as many as the GPU's tokenizers (one core's chunking keeps a GPU
    waiting), else 0."""
    if settings.ingest_chunk_workers is not None:
        return settings.ingest_chunk_workers
    if bulk and on_gpu(embedder) and may_start_processes():
        from .gpu_encode import gpu_helper_processes

        return gpu_helper_processes()
    return 0


def open_ingest_index(settings: Settings, embedder: Embedder, index: VectorIndex) -> VectorIndex:
    """The index a bulk ingest writes: ``index`` (:func:`~ingest.index.open_index`'s, opened
    before the model loads so that a data directory in use fails at once), or, when
    ``ingest_index_process`` says so for an embedded collection, the same one served from a
    process of its own (:class:`~ingest.index.process.ProcessIndex`): ``index`` is closed and
    its data directory's lock passes to the child."""
    wanted = settings.ingest_index_process
    if settings.qdrant_url or wanted == "off" or (wanted == "auto" and not on_gpu(embedder)):
        return index
    if not may_start_processes():
        logger.warning("ingest_index_process ignored: this process is a daemon")
        return index
    index.close()
    return ProcessIndex(partial(open_index, settings))
