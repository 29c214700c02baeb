"""Ingest jobs on a Celery fleet: the API enqueues a task per batch, ``grounded worker`` runs it.

Configured so that no accepted job is lost and none is written twice:

- ``task_acks_late`` + ``task_reject_on_worker_lost``: a task is acknowledged only after it ran,
  and one whose worker process died (or was killed at the hard time limit) is put back on the
  queue; the job counts each batch's starts, so one that kills its worker every time is given
  up after ``task_max_retries`` + 1 attempts instead of looping forever;
- ``worker_prefetch_multiplier = 1``: a worker holds no task it is not running, so a dead worker
  strands nothing and a slow batch does not hide work from idle workers;
- the Redis ``visibility_timeout`` (``broker_visibility_timeout``) exceeds the hard
  ``task_time_limit``, so only a task whose worker is gone is redelivered, never a running one;
- transient Qdrant, Redis or embedding errors and the soft time limit are retried
  ``task_max_retries`` times with doubling backoff; after that the batch's documents are
  reported failed in the job;
- a redelivered batch is harmless: the job records a batch once, and point ids are derived
  from (tenant, doc id, chunk index), so rewriting a chunk overwrites the same point.

``celery --app service.jobs.celery_app inspect ping`` finds the app as ``app`` (built from the
environment's settings).

Example::

    app = make_celery(Settings(broker_url="redis://localhost:6379/0"))
    CeleryDispatcher(app).submit(job)          # the API side
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init

from ingest.documents import Document
from ingest.names import DEFAULT_TENANT
from ingest.pipeline import Ingestor, IngestReport
from ingest.settings import Settings

from .model import Job
from .runner import (
    Ingest,
    attempts_of,
    failure,
    give_up,
    is_transient,
    retry_delay,
    run_batch,
)
from .store import JobStore, RedisJobStore

log = logging.getLogger("grounded.jobs")

TASK_NAME = "grounded.ingest_batch"
QUEUE = "grounded-ingest"


@dataclass
class WorkerContext:
    """What a worker process ingests with; built once per process, on its first task."""

    settings: Settings
    store: JobStore
    ingest: Ingest


_context: WorkerContext | None = None
_settings: Settings | None = None
_context_lock = threading.Lock()


def use_worker_context(context: WorkerContext | None) -> None:
    """Set what tasks in this process use (tests: a worker thread over a local-mode index)."""
    global _context
    _context = context


def use_worker_settings(settings: Settings) -> None:
    """The settings worker processes build their context from (``grounded worker``'s flags
    included); set before the pool forks."""
    global _settings
    _settings = settings


class DocumentLocks:
    """Redis locks, one per (tenant, collection, document), taken in sorted order.

    Two workers must not write the same document at once: each writes its version and then
    deletes the chunks of every other version, so interleaved they can delete each other's
    chunks. In one process :class:`~service.pipeline.RagPipeline`'s write lock prevents that;
    across a fleet these locks do. Only batches that share a document wait for each other.
    """

    def __init__(self, url: str, timeout: int) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        self.timeout = timeout

    @contextmanager
    def hold(self, tenant: str, collection: str, doc_ids: Sequence[str]) -> Iterator[None]:
        import redis

        held = []
        try:
            for doc_id in sorted(set(doc_ids)):
                name = json.dumps([tenant, collection, doc_id])
                digest = hashlib.sha256(name.encode()).hexdigest()
                lock = self._redis.lock(
                    f"grounded:doclock:{digest}",
                    timeout=self.timeout,
                    blocking_timeout=self.timeout,
                )
                if not lock.acquire():
                    raise TimeoutError(f"document {doc_id!r} stayed locked by another worker")
                held.append(lock)
            yield
        finally:
            for lock in reversed(held):
                with suppress(redis.exceptions.LockError):  # expired: nothing to release
                    lock.release()


class IndexIngest:
    """``(docs, collection, tenant) -> report`` over one index and embedder (a worker's own)."""

    def __init__(self, settings: Settings, locks: DocumentLocks | None = None) -> None:
        from ingest.build import build_embedder
        from ingest.index import open_index

        self.settings = settings
        self.index = open_index(settings)
        self.embedder = build_embedder(settings, documents=True)
        self.locks = locks
        self._ingestors: dict[tuple[str, str], Ingestor] = {}

    def __call__(
        self, documents: list[Document], collection: str, *, tenant: str = DEFAULT_TENANT
    ) -> IngestReport:
        from ingest.build import build_ingestor

        key = (collection, tenant)
        if key not in self._ingestors:
            self._ingestors[key] = build_ingestor(
                self.settings, self.index, self.embedder, collection, tenant
            )
        if self.locks is None:
            return self._ingestors[key].ingest(documents)
        with self.locks.hold(tenant, collection, [d.id for d in documents]):
            return self._ingestors[key].ingest(documents)


def worker_context() -> WorkerContext:
    """This process's context, built on first use from :func:`use_worker_settings` (or the
    environment)."""
    global _context
    with _context_lock:
        if _context is None:
            settings = _settings or Settings()
            if not settings.broker_url:
                raise RuntimeError("GROUNDED_BROKER_URL is not set")
            locks = DocumentLocks(settings.broker_url, settings.task_time_limit)
            _context = WorkerContext(
                settings, RedisJobStore(settings.broker_url), IndexIngest(settings, locks)
            )
        return _context


def worker_threads(settings: Settings) -> int:
    """torch / OpenMP threads per worker process: the cores shared among the processes."""
    if settings.worker_threads:
        return settings.worker_threads
    return max(1, (os.cpu_count() or 1) // settings.worker_concurrency)


def _ingest_batch(task: Task, job_id: str, batch: int) -> None:
    settings = _context.settings if _context else (_settings or Settings())
    attempts = settings.task_max_retries + 1
    try:
        context = worker_context()
        run_batch(context.store, job_id, batch, context.ingest, attempts)
        return
    except Exception as exc:
        error = exc
    # A transient error (Qdrant, Redis, the soft time limit) or a worker that cannot load its
    # model or reach the store: try again later, on this or another worker, until the batch's
    # attempts (counted in the job, so redeliveries count too) are spent.
    try:
        store = worker_context().store
        tried = attempts_of(store, job_id, batch)
        if not is_transient(error) or tried >= attempts:
            log.error("job %s batch %d failed: %s", job_id, batch, error)
            give_up(store, job_id, batch, failure(error, tried))
            return
    except Exception as exc:  # the store or the context is down too: retry the whole task
        log.warning("job %s batch %d: cannot record (%s)", job_id, batch, exc)
        tried = task.request.retries + 1
    delay = retry_delay(settings.task_retry_backoff, tried - 1)
    log.warning("job %s batch %d: %s; retry in %.1f s", job_id, batch, error, delay)
    raise task.retry(exc=error, countdown=delay, max_retries=None)


def make_celery(settings: Settings) -> Celery:
    app = Celery("grounded", broker=settings.broker_url, set_as_current=False)
    memory = settings.worker_max_memory_mb
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # A task killed at the hard time limit goes back on the queue (its attempts are
        # counted in the job); the soft limit comes first, as a retryable error in the task.
        task_acks_on_timeout=False,
        task_acks_on_failure=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.task_time_limit,
        task_soft_time_limit=soft_time_limit(settings.task_time_limit),
        broker_transport_options={"visibility_timeout": settings.broker_visibility_timeout},
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        worker_concurrency=settings.worker_concurrency,
        worker_max_memory_per_child=memory * 1024 if memory else None,
        worker_hijack_root_logger=False,
    )
    app.task(name=TASK_NAME, bind=True)(_ingest_batch)
    return app


def soft_time_limit(hard: int) -> int:
    """A little under the hard limit, so a slow batch ends as a retry, not a killed process."""
    return max(1, hard - max(1, min(60, hard // 10)))


class CeleryDispatcher:
    """The API side of the fleet: one task per batch of a stored job."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def start(self) -> None:
        """Workers run the jobs; nothing to start in the API process."""

    def submit(self, job: Job) -> None:
        for batch in range(job.batches):
            self.app.send_task(TASK_NAME, (job.id, batch), queue=QUEUE)

    def close(self) -> None:
        self.app.close()


@worker_process_init.connect
def _prepare_process(**_: Any) -> None:
    """A new pool process gets its share of the cores, then loads the model and opens the
    index before its first task (never in the parent: torch and HTTP connections do not
    survive a fork)."""
    import torch

    torch.set_num_threads(worker_threads(_settings or Settings()))
    worker_context()


def _app_from_environment() -> Celery:
    try:
        return make_celery(Settings())
    except Exception as exc:  # importing the module must not fail on a bad environment
        log.warning("celery app from the environment's settings failed: %s", exc)
        return Celery("grounded", set_as_current=False)


app = _app_from_environment()
