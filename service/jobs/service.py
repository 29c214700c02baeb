"""Ingest jobs as the API and the CLI see them: submit, look up, list, cancel, wait.

:func:`build_job_service` picks the engine from the settings: with ``broker_url`` the jobs live
in Redis and Celery workers run them (``grounded worker``); without, they live in SQLite under
the data directory and a thread of the service runs them. Either way a job is stored before
:meth:`JobService.submit` returns, which is before the API answers 202.

Example::

    jobs = build_job_service(settings, pipeline.ingest)
    job = jobs.submit(docs, "kb", tenant="default")
    job = await jobs.wait(job.id, tenant="default", timeout=60)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Protocol

from ingest.documents import Document
from ingest.pipeline import BATCH_MAX_CHARS, batched
from ingest.settings import Settings

from ..write_queue import QueueFull
from .model import Job, JobState
from .runner import Ingest
from .store import JobStore, open_job_store

PURGE_EVERY_S = 600.0


class JobNotFound(LookupError):
    """No such job for this caller (another tenant's job is not found either)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no ingest job {job_id!r}")


class JobFinished(Exception):
    """The job cannot be cancelled: it finished already (409)."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.id} already {job.state.value}")


class JobsUnavailable(Exception):
    """The job could not be handed to the workers (the broker is down); nothing was accepted
    (503 with ``Retry-After``)."""

    retry_after = 10


class Dispatcher(Protocol):
    def start(self) -> None:
        """Begin running stored jobs (the embedded runner resumes interrupted ones)."""

    def submit(self, job: Job) -> None: ...

    def close(self) -> None: ...


class NoDispatch:
    """For callers that only read and cancel jobs (``grounded jobs``): dispatches nothing."""

    def start(self) -> None: ...

    def submit(self, job: Job) -> None: ...

    def close(self) -> None: ...


class JobService:
    def __init__(
        self,
        store: JobStore,
        dispatcher: Dispatcher,
        *,
        batch_docs: int = 16,
        max_open_jobs: int = 1000,
        retention_hours: float = 168,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.batch_docs = batch_docs
        self.max_open_jobs = max_open_jobs
        self.retention_s = retention_hours * 3600
        self._purged_at = 0.0

    def submit(self, documents: Sequence[Document], collection: str, tenant: str) -> Job:
        """Store a job durably and hand it to the workers; :class:`QueueFull` when the tenant
        has too many jobs open (one tenant cannot block the others), :class:`JobsUnavailable`
        when the workers cannot be reached."""
        if self.store.open_count(tenant) >= self.max_open_jobs:
            raise QueueFull(self.max_open_jobs, retry_after=30, waiting="ingest jobs open")
        batches = list(batched(documents, self.batch_docs, BATCH_MAX_CHARS))
        job = Job.new(collection, tenant, documents=len(documents), batches=len(batches))
        self.store.create(job, batches)
        if batches:
            try:
                self.dispatcher.submit(job)
            except Exception as exc:
                # Never leave a stored job that no worker will run: it would stay "queued".
                self.store.update(job.id, Job.cancel)
                raise JobsUnavailable(f"cannot queue the ingest job: {exc}") from exc
        self._purge_now_and_then()
        return job

    def start(self) -> None:
        self.dispatcher.start()

    def get(self, job_id: str, tenant: str | None) -> Job:
        """``tenant=None`` (an admin) sees every tenant's jobs."""
        job = self.store.get(job_id)
        if job is None or (tenant is not None and job.tenant != tenant):
            raise JobNotFound(job_id)
        return job

    def recent(self, tenant: str | None, limit: int = 50) -> list[Job]:
        return self.store.recent(tenant, limit)

    def cancel(self, job_id: str, tenant: str | None) -> Job:
        """Queued batches are dropped; a batch already running finishes."""
        if (job := self.get(job_id, tenant)).state.finished:
            raise JobFinished(job)
        cancelled = self.store.update(job_id, Job.cancel)
        if cancelled is None:
            raise JobNotFound(job_id)
        if cancelled.state is not JobState.CANCELLED:  # it finished meanwhile
            raise JobFinished(cancelled)
        return cancelled

    async def wait(self, job_id: str, tenant: str | None, timeout: float) -> Job:
        """The job once finished, or as it stands when ``timeout`` runs out."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            job = await asyncio.to_thread(self.get, job_id, tenant)
            if job.state.finished or time.monotonic() >= deadline:
                return job
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _purge_now_and_then(self) -> None:
        now = time.time()
        if now - self._purged_at >= PURGE_EVERY_S:
            self._purged_at = now
            self.store.purge(now - self.retention_s)

    def close(self) -> None:
        self.dispatcher.close()
        self.store.close()


def build_job_service(settings: Settings, ingest: Ingest) -> JobService:
    """Celery + Redis when ``broker_url`` is set, else a service thread + SQLite."""
    store = open_job_store(settings.broker_url, settings.jobs_path)
    dispatcher: Dispatcher
    if settings.broker_url:
        from .celery_app import CeleryDispatcher, make_celery

        dispatcher = CeleryDispatcher(make_celery(settings))
    else:
        from .local import LocalJobRunner

        dispatcher = LocalJobRunner(
            store,
            ingest,
            max_retries=settings.task_max_retries,
            backoff=settings.task_retry_backoff,
        )
    return JobService(
        store,
        dispatcher,
        batch_docs=settings.job_batch_docs,
        max_open_jobs=settings.max_open_jobs,
        retention_hours=settings.job_retention_hours,
    )
