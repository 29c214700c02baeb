"""Running one batch of a job, the same way on a service thread and on a Celery worker.

A batch is ingested as a whole; when that fails with anything but a transient error, its
documents are retried one at a time so that a bad document fails alone (reported in the job)
and the others are written. Transient errors — Qdrant or the network timing out or refusing,
a 5xx or 429 from Qdrant, CUDA out of memory — are raised to the caller, which retries the
batch with backoff (re-running a batch is harmless: unchanged documents are skipped by their
hash and point ids are deterministic).

Example::

    run_batch(store, job_id, 0, pipeline.ingest)
"""

from __future__ import annotations

import logging
from typing import Protocol

import httpx

from ingest.documents import Document
from ingest.pipeline import IngestReport

from .model import BatchOutcome, Job, Problem
from .store import JobStore

log = logging.getLogger("grounded.jobs")


class Ingest(Protocol):
    """What writes a batch: ``RagPipeline.ingest``, or a worker's own index and model."""

    def __call__(
        self, documents: list[Document], collection: str, *, tenant: str
    ) -> IngestReport: ...


def is_transient(exc: BaseException) -> bool:
    """Worth retrying the same batch later (as opposed to a problem of the documents)."""
    import redis

    if isinstance(exc, ConnectionError | TimeoutError | httpx.TransportError | redis.RedisError):
        return True
    try:
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
    except ImportError:  # pragma: no cover - qdrant-client is a dependency
        return False
    if isinstance(exc, ResponseHandlingException):
        return True
    if isinstance(exc, UnexpectedResponse):
        status = exc.status_code
        return status is not None and (status == 429 or status >= 500)
    # torch.OutOfMemoryError (CUDA) and Celery's soft time limit, without importing either
    return type(exc).__name__ in ("OutOfMemoryError", "SoftTimeLimitExceeded")


def _outcome(report: IngestReport, documents: int, errors: list[Problem]) -> BatchOutcome:
    return BatchOutcome(
        documents=documents,
        added=report.added,
        updated=report.updated,
        unchanged=report.unchanged,
        chunks_written=report.chunks_written,
        skipped=tuple(Problem(s.doc_id, s.reason) for s in report.skipped),
        errors=tuple(errors),
    )


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def ingest_documents(docs: list[Document], job: Job, ingest: Ingest) -> BatchOutcome:
    """The batch's outcome; raises only transient errors."""
    try:
        return _outcome(ingest(docs, job.collection, tenant=job.tenant), len(docs), [])
    except Exception as exc:
        if is_transient(exc):
            raise
        log.warning("job %s: batch failed (%s); retrying its documents one by one", job.id, exc)
    report, errors = IngestReport(), []
    for doc in docs:
        try:
            report.add(ingest([doc], job.collection, tenant=job.tenant))
        except Exception as exc:
            if is_transient(exc):
                raise
            errors.append(Problem(doc.id, _reason(exc)))
    return _outcome(report, len(docs), errors)


def run_batch(
    store: JobStore, job_id: str, batch: int, ingest: Ingest, max_attempts: int
) -> Job | None:
    """Run one batch unless it is recorded already or its job finished (cancelled). A batch
    started more than ``max_attempts`` times (its process died or timed out each time) is
    given up: its documents fail, the job goes on."""
    job = store.get(job_id)
    if job is None or job.state.finished or batch in job.done_batches:
        return job
    docs = store.documents(job_id, batch)
    if docs is None:  # recorded by another delivery of this batch meanwhile
        return job
    job = store.update(job_id, lambda j: j.begin(batch))
    if job is None:
        return None
    started = job.attempts[batch]
    if started > max_attempts:
        reason = f"started {started - 1} times without finishing (its worker died or timed out)"
        return give_up(store, job_id, batch, reason)
    outcome = ingest_documents(docs, job, ingest)
    job = store.update(job_id, lambda j: j.record(batch, outcome))
    store.drop_documents(job_id, batch)
    return job


def attempts_of(store: JobStore, job_id: str, batch: int) -> int:
    job = store.get(job_id)
    return job.attempts.get(batch, 0) if job else 0


def give_up(store: JobStore, job_id: str, batch: int, reason: str) -> Job | None:
    """The batch's documents fail with ``reason`` (retries are spent); the job goes on."""
    docs = store.documents(job_id, batch) or []
    outcome = BatchOutcome(documents=len(docs), errors=tuple(Problem(d.id, reason) for d in docs))
    job = store.update(job_id, lambda j: j.record(batch, outcome))
    store.drop_documents(job_id, batch)
    return job


def failure(exc: BaseException, attempts: int) -> str:
    return f"gave up after {attempts} attempts: {_reason(exc)}"


def retry_delay(backoff: float, attempt: int) -> float:
    """Seconds before retry number ``attempt`` (0-based): doubling, at most 10 minutes."""
    return min(600.0, backoff * 2**attempt)
