"""Chunking (and BM25 encoding) in worker processes, for embedders faster than one core can
chunk for.

Sentence splitting and token counting let one process chunk about 2,700-3,000 chunks/s (~300 with
pysbd, the splitter before sentencex): plenty beside a CPU embedder (~70 chunks/s on two cores), but
an H100 embeds ~14,000 chunks/s, so the ingest pipeline on a GPU waits for the chunker
(``bench/gpu_ingest.py``). :class:`ChunkPool` spreads the documents of a batch over ``workers``
processes, each holding its own copy of the chunker, and returns every document's chunks in order:
the same chunks as in-process. The workers also encode the chunks' BM25 vectors
(:meth:`ChunkPool.bm25_many`), the largest share (~42 µs a chunk) of what the ingesting process
spends around the model (``bench/ingest_no_model.py``).

Processes are spawned, not forked: the ingesting process may already run threads (ONNX Runtime,
torch, a writer thread), and a fork copies their locks mid-use.

Example::

    with ChunkPool(chunker, workers=8) as pool:
        per_doc = pool.chunk_many(documents)     # [chunker.chunk(d) for d in documents]
        vectors = pool.bm25_many(params, texts)  # Bm25Encoder(params).embed_documents(texts)
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from types import TracebackType

from .chunking import Chunker
from .documents import Chunk, Document
from .sparse import Bm25Encoder, Bm25Params, SparseVec

_chunker: Chunker | None = None  # the worker process's own copy
_encoders: dict[Bm25Params, Bm25Encoder] = {}  # the worker's, by the collection's parameters


def _start_worker(chunker: Chunker) -> None:
    global _chunker
    _chunker = chunker


def _chunk(doc: Document) -> list[Chunk]:
    assert _chunker is not None, "ChunkPool worker started without a chunker"
    return _chunker.chunk(doc)


def _bm25(task: tuple[Bm25Params, list[str]]) -> list[SparseVec]:
    params, texts = task
    if params not in _encoders:
        _encoders[params] = Bm25Encoder(params)
    return _encoders[params].embed_documents(texts)


def may_start_processes() -> bool:
    """False in a daemonic process (a Celery prefork worker), which may not start processes of
    its own."""
    return not multiprocessing.current_process().daemon


class ChunkPool:
    """``workers`` processes that chunk documents with (a pickled copy of) ``chunker``.

    Args:
        chunker: the chunker to copy into each worker; it must pickle (``TokenChunker`` does).
        workers: processes; at least 1.
    """

    def __init__(self, chunker: Chunker, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(chunker,),
        )

    def chunk_many(self, docs: Sequence[Document]) -> list[list[Chunk]]:
        """Each document's chunks, in the order of ``docs``."""
        if not docs:
            return []
        return list(self._pool.map(_chunk, docs, chunksize=self._task_size(len(docs))))

    def bm25_many(self, params: Bm25Params, texts: Sequence[str]) -> list[SparseVec]:
        """The BM25 vectors of ``texts`` with ``params``, in order:
        ``Bm25Encoder(params).embed_documents(texts)``, encoded in the workers."""
        if not texts:
            return []
        size = self._task_size(len(texts))
        tasks = [(params, list(texts[i : i + size])) for i in range(0, len(texts), size)]
        return [vec for part in self._pool.map(_bm25, tasks) for vec in part]

    def _task_size(self, items: int) -> int:
        # A few tasks per worker: big enough to amortise the pickling, small enough to balance.
        return max(1, -(-items // (4 * self.workers)))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ChunkPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
