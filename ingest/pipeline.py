"""The ingest pipeline: documents → chunks → dense + BM25 vectors → Qdrant, idempotently.

Every chunk's point id is derived from (doc id, chunk index), and every chunk carries its
document's content hash. A batch is written as *upsert the new version, then delete the document's
points of any other hash*, so:

- re-ingesting an unchanged document writes nothing (its stored hash and chunk set match);
- a changed document replaces all its old chunks, including surplus ones from a longer version;
- a crash between the two steps leaves a document that the next run sees as not current and
  rewrites; a re-run after any crash converges to exactly the current chunks, with no duplicates.

Embedding the next batch overlaps with writing the previous one.

Example::

    ingestor = Ingestor(index, embedder, chunker, collection="docs")
    report = ingestor.ingest(documents)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from typing import Protocol

import numpy as np

from .chunk_pool import ChunkPool, may_start_processes
from .chunking import Chunker
from .documents import (
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    Chunk,
    Document,
    check_metadata,
    point_id,
)
from .embedding import Embedder
from .index import IndexPoint, Manifest, VectorIndex
from .loaders import LoadFailure
from .names import DEFAULT_TENANT, check_tenant
from .payload import chunk_payload
from .sparse import Bm25Encoder, Bm25Params, measure_avg_len

log = logging.getLogger(__name__)
# ~8 MB of text per embed/write batch: enough to keep the encoder busy, small enough that one
# batch of large documents does not take gigabytes of memory.
BATCH_MAX_CHARS = 8_000_000

ProgressFn = Callable[[int, int], None]
"""Called after each written batch with (documents done, chunks written)."""


@dataclass(frozen=True)
class Skipped:
    """A document that was not written, and why (empty, unstorable metadata)."""

    doc_id: str
    reason: str


@dataclass
class IngestReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    chunks_written: int = 0
    failures: list[LoadFailure] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def documents(self) -> int:
        return self.added + self.updated + self.unchanged

    @property
    def ok(self) -> bool:
        return not self.failures

    def add(self, other: IngestReport) -> None:
        self.added += other.added
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.deleted += other.deleted
        self.chunks_written += other.chunks_written
        self.failures.extend(other.failures)
        self.skipped.extend(other.skipped)

    def to_dict(self) -> dict[str, object]:
        return {
            "documents": self.documents,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "chunks_written": self.chunks_written,
            "failures": [
                {"source": f.source, "line": f.line, "reason": f.reason} for f in self.failures
            ],
            "skipped": [{"id": s.doc_id, "reason": s.reason} for s in self.skipped],
            "seconds": round(self.seconds, 3),
        }


class IngestTarget(Protocol):
    """Where the CLI sends documents: the local index, or a running service over HTTP."""

    def ingest(
        self, documents: Iterable[Document], progress: ProgressFn | None = None
    ) -> IngestReport: ...

    def delete(self, doc_ids: Sequence[str]) -> int: ...

    def document_sources(self) -> dict[str, str]: ...


def batched(
    items: Iterable[Document], size: int, max_chars: int | None = None
) -> Iterator[list[Document]]:
    """Lists of at most ``size`` documents and, when given, about ``max_chars`` characters of
    text (a batch always takes at least one document), so a batch of large documents does not
    hold gigabytes of text and vectors at once."""
    if max_chars is None:
        iterator = iter(items)
        while batch := list(islice(iterator, size)):
            yield batch
        return
    batch, chars = [], 0
    for doc in items:
        if batch and (len(batch) >= size or chars + len(doc.text) > max_chars):
            yield batch
            batch, chars = [], 0
        batch.append(doc)
        chars += len(doc.text)
    if batch:
        yield batch


class Ingestor:
    """Writes documents into one collection so that it holds exactly their current chunks.

    Args:
        index: the Qdrant adapter to write to.
        embedder: dense embedder; its name and dimension are recorded in the collection.
        chunker: splits documents; its signature is part of each document's hash, so changing
            the chunk size re-chunks everything on the next ingest.
        collection: target collection, created on first write.
        bm25: BM25 parameters for a new collection. An existing collection keeps the parameters
            it was created with.
        measure_bm25_length: replace ``bm25.avg_len`` by the average length of the first batch's
            chunks when the collection is created.
        batch_docs: documents per embed/write batch.
        tenant: whose documents these are: stamped on every point, and the only tenant whose
            points the re-ingest checks, stale-chunk removal and deletes can touch.
        max_metadata_depth, max_metadata_bytes: documents whose metadata Qdrant could not store
            or return are skipped (reported), never written.
        chunk_workers: processes that chunk each batch and encode its BM25 vectors
            (:class:`~ingest.chunk_pool.ChunkPool`); 0 does both in this process. Worth it
            only when the embedder outruns one core's chunking (a GPU), and only for large
            ingests: the pool starts in ~seconds.
    """

    def __init__(
        self,
        index: VectorIndex,
        embedder: Embedder,
        chunker: Chunker,
        *,
        collection: str,
        bm25: Bm25Params | None = None,
        measure_bm25_length: bool = True,
        batch_docs: int = 256,
        tenant: str = DEFAULT_TENANT,
        max_metadata_depth: int = MAX_METADATA_DEPTH,
        max_metadata_bytes: int = MAX_METADATA_BYTES,
        chunk_workers: int = 0,
    ) -> None:
        if batch_docs <= 0:
            raise ValueError("batch_docs must be > 0")
        if chunk_workers < 0:
            raise ValueError("chunk_workers must be >= 0")
        self.chunk_workers = chunk_workers
        self.tenant = check_tenant(tenant)
        self.max_metadata_depth = max_metadata_depth
        self.max_metadata_bytes = max_metadata_bytes
        self.index = index
        self.embedder = embedder
        self.chunker = chunker
        self.collection = collection
        self.bm25 = bm25 or Bm25Params()
        self.measure_bm25_length = measure_bm25_length
        self.batch_docs = batch_docs
        self._sparse: Bm25Encoder | None = None

    # collection --------------------------------------------------------------------------
    def _ensure_collection(self, first_texts: Sequence[str]) -> Bm25Encoder:
        if self._sparse is not None:
            return self._sparse
        manifest = self.index.manifest(self.collection)
        if manifest is None:
            avg_len = (
                measure_avg_len(list(first_texts), self.bm25.language)
                if self.measure_bm25_length and first_texts
                else self.bm25.avg_len
            )
            params = Bm25Params(self.bm25.k1, self.bm25.b, avg_len, self.bm25.language)
            manifest = Manifest(
                self.embedder.name, self.embedder.dimension, params, self.chunker.signature
            )
            try:
                self.index.create_collection(self.collection, manifest)
            except Exception:
                # Another worker of a fleet created it first: use (and check) theirs.
                manifest = self.index.manifest(self.collection)
                if manifest is None:
                    raise
        manifest.check_model(self.collection, self.embedder.name, self.embedder.dimension)
        self._sparse = Bm25Encoder(manifest.bm25)
        return self._sparse

    # ingest ------------------------------------------------------------------------------
    def ingest(
        self, documents: Iterable[Document], progress: ProgressFn | None = None
    ) -> IngestReport:
        report = IngestReport()
        started = time.perf_counter()
        if self.index.manifest(self.collection) is not None:
            self._ensure_collection([])  # fail on a model mismatch before embedding anything
        done_docs = 0
        # Batch N is written while batch N+1 is embedded. Index reads (the plan) happen only
        # while no write is in flight: qdrant-client's local mode is not thread-safe.
        queued: tuple[Ingestor._Plan, np.ndarray, int, int] | None = None
        # The pool is entered first, so it closes last: the writer drains into it on the way out.
        with (
            self._workers() as pool,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="grounded-writer") as writer,
        ):
            for batch in batched(documents, self.batch_docs, BATCH_MAX_CHARS):
                plan = self._plan(batch, report, pool)
                pending = self._submit(writer, queued, pool, progress) if queued else None
                vectors = self.embedder.embed_documents(plan.texts)
                if pending is not None:
                    pending.result()
                done_docs += len(batch)
                report.chunks_written += len(plan.chunks)
                queued = (plan, vectors, done_docs, report.chunks_written)
            if queued is not None:
                self._submit(writer, queued, pool, progress).result()
        if self.index.manifest(self.collection) is not None:
            self.index.flush(self.collection)
        report.seconds = time.perf_counter() - started
        return report

    def _submit(
        self,
        writer: ThreadPoolExecutor,
        queued: tuple[Ingestor._Plan, np.ndarray, int, int],
        pool: ChunkPool | None,
        progress: ProgressFn | None,
    ) -> Future[int]:
        plan, vectors, done_docs, done_chunks = queued
        sparse = self._ensure_collection(plan.texts)
        future = writer.submit(self._write, plan, vectors, sparse, pool)
        if progress:
            future.add_done_callback(lambda _f: progress(done_docs, done_chunks))
        return future

    @dataclass
    class _Plan:
        chunks: list[tuple[Chunk, str, int]]  # (chunk, doc_hash, chunk_count)
        current: dict[str, str]  # doc_id -> new hash, for docs being (re)written
        texts: list[str] = field(default_factory=list)  # each chunk's embed_text, made once

    def _problem(self, doc: Document) -> str | None:
        """Why ``doc`` cannot be written, or None."""
        if not doc.text.strip():
            return "empty document: no text"
        try:
            check_metadata(
                doc.metadata, max_depth=self.max_metadata_depth, max_bytes=self.max_metadata_bytes
            )
        except ValueError as exc:
            return str(exc)
        return None

    @contextmanager
    def _workers(self) -> Iterator[ChunkPool | None]:
        """The processes that chunk and BM25-encode each batch, or None: this process does."""
        if not self.chunk_workers or not may_start_processes():
            if self.chunk_workers:
                log.warning("ingest_chunk_workers ignored: this process is a daemon")
            yield None
            return
        with ChunkPool(self.chunker, self.chunk_workers) as pool:
            yield pool

    def _plan(
        self,
        batch: list[Document],
        report: IngestReport,
        pool: ChunkPool | None,
    ) -> Ingestor._Plan:
        valid = []
        for doc in batch:
            problem = self._problem(doc)
            if problem is None:
                valid.append(doc)
            else:
                report.skipped.append(Skipped(doc.id, problem))
        hashes = {doc.id: doc.content_hash(self.chunker.signature) for doc in valid}
        exists = self.index.manifest(self.collection) is not None
        states = (
            self.index.document_states(self.collection, list(hashes), self.tenant)
            if exists and hashes
            else {}
        )
        todo = []
        for doc in valid:
            state = states.get(doc.id)
            if state is not None and state.is_current(hashes[doc.id]):
                report.unchanged += 1
            else:
                todo.append((doc, state))
        plan = Ingestor._Plan([], {})
        docs = [d for d, _ in todo]
        per_doc = pool.chunk_many(docs) if pool else [self.chunker.chunk(d) for d in docs]
        for (doc, state), chunks in zip(todo, per_doc, strict=True):
            doc_hash = hashes[doc.id]
            if not chunks:
                report.skipped.append(Skipped(doc.id, "empty document: no chunks"))
                continue
            if state is None:
                report.added += 1
            else:
                report.updated += 1
            plan.current[doc.id] = doc_hash
            plan.chunks.extend((c, doc_hash, len(chunks)) for c in chunks)
        plan.texts = [c.embed_text for c, _, _ in plan.chunks]
        return plan

    def _write(
        self,
        plan: Ingestor._Plan,
        vectors: np.ndarray,
        sparse: Bm25Encoder,
        pool: ChunkPool | None,
    ) -> int:
        bm25 = (
            pool.bm25_many(sparse.params, plan.texts)
            if pool
            else sparse.embed_documents(plan.texts)
        )
        points = [
            IndexPoint(
                point_id(chunk.doc_id, chunk.chunk_index, self.tenant),
                vector,
                bm25_vector,
                chunk_payload(chunk, doc_hash, count, self.tenant),
            )
            for (chunk, doc_hash, count), vector, bm25_vector in zip(
                plan.chunks, vectors, bm25, strict=True
            )
        ]
        for start in range(0, len(points), 512):
            self.index.upsert(self.collection, points[start : start + 512])
        # Only after the new version is in: drop chunks of older versions (incl. surplus ones).
        self.index.delete_stale_chunks(self.collection, plan.current, self.tenant)
        return len(points)

    # deletes -----------------------------------------------------------------------------
    def delete(self, doc_ids: Sequence[str]) -> int:
        """Remove documents; returns how many of them were in the collection."""
        if self.index.manifest(self.collection) is None:
            return 0
        present = self.index.document_states(self.collection, list(doc_ids), self.tenant)
        self.index.delete_documents(self.collection, list(present), self.tenant)
        if present:
            self.index.flush(self.collection)
        return len(present)

    def document_sources(self) -> dict[str, str]:
        if self.index.manifest(self.collection) is None:
            return {}
        return self.index.document_sources(self.collection, self.tenant)
