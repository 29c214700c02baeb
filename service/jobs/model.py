"""What an ingest job is: its state, its progress, and how one finished batch changes it.

A job's documents are split into batches (``job_batch_docs`` each); a batch is the unit a worker
runs, retries and records. Recording is idempotent — :meth:`Job.record` ignores a batch already
recorded — so a batch that runs twice (a task redelivered after a worker died) counts once, and
its points are the same points, because point ids are derived from (tenant, doc id, chunk index).

Example::

    job = Job.new("kb", "default", documents=40, batches=3)
    job = job.record(0, BatchOutcome(added=16, chunks_written=52, documents=16))
    job.to_dict()["progress"]["documents_done"]   # 16
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from ingest.documents import Document

MAX_LISTED_PROBLEMS = 1000
"""Per-document errors and skips kept per job; more are counted, not listed."""


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class Problem:
    """A document that was skipped (nothing to index) or failed (an error), and why."""

    id: str
    reason: str


@dataclass(frozen=True)
class BatchOutcome:
    """What one batch did: the counts of an :class:`~ingest.pipeline.IngestReport` plus the
    documents that failed with an error."""

    documents: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    chunks_written: int = 0
    skipped: tuple[Problem, ...] = ()
    errors: tuple[Problem, ...] = ()


@dataclass(frozen=True)
class Job:
    id: str
    collection: str
    tenant: str
    documents: int
    batches: int
    state: JobState = JobState.QUEUED
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    done_batches: tuple[int, ...] = ()
    documents_done: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    chunks_written: int = 0
    skipped: tuple[Problem, ...] = ()
    errors: tuple[Problem, ...] = ()
    problems_omitted: int = 0
    attempts: dict[int, int] = field(default_factory=dict)  # batch -> times it was started

    @classmethod
    def new(cls, collection: str, tenant: str, *, documents: int, batches: int) -> Job:
        job = cls(uuid.uuid4().hex, collection, tenant, documents, batches)
        if batches == 0:  # nothing to do: finished on arrival
            return replace(job, state=JobState.SUCCEEDED, finished_at=job.created_at)
        return job

    # transitions ---------------------------------------------------------------------------
    def start(self) -> Job:
        """The first batch began (a no-op once running or finished)."""
        if self.state is not JobState.QUEUED:
            return self
        return replace(self, state=JobState.RUNNING, started_at=time.time())

    def begin(self, batch: int) -> Job:
        """Batch ``batch`` starts (again): count the attempt, so a batch whose process dies
        every time is given up instead of redelivered forever."""
        return replace(
            self.start(), attempts={**self.attempts, batch: self.attempts.get(batch, 0) + 1}
        )

    def record(self, batch: int, outcome: BatchOutcome) -> Job:
        """Add one finished batch; a batch recorded before is ignored (at-least-once delivery)."""
        if batch in self.done_batches or not 0 <= batch < self.batches:
            return self
        skipped, errors = list(self.skipped), list(self.errors)
        omitted = self.problems_omitted
        for target, new in ((skipped, outcome.skipped), (errors, outcome.errors)):
            room = max(0, MAX_LISTED_PROBLEMS - len(target))
            target.extend(new[:room])
            omitted += max(0, len(new) - room)
        job = replace(
            self.start(),
            done_batches=(*self.done_batches, batch),
            documents_done=self.documents_done + outcome.documents,
            added=self.added + outcome.added,
            updated=self.updated + outcome.updated,
            unchanged=self.unchanged + outcome.unchanged,
            chunks_written=self.chunks_written + outcome.chunks_written,
            skipped=tuple(skipped),
            errors=tuple(errors),
            problems_omitted=omitted,
        )
        if len(job.done_batches) < job.batches or job.state.finished:
            return job
        return replace(
            job,
            state=JobState.FAILED if job.errors else JobState.SUCCEEDED,
            finished_at=time.time(),
        )

    def cancel(self) -> Job:
        if self.state.finished:
            return self
        return replace(self, state=JobState.CANCELLED, finished_at=time.time())

    def pending_batches(self) -> list[int]:
        if self.state.finished:
            return []
        done = set(self.done_batches)
        return [b for b in range(self.batches) if b not in done]

    # views ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The API's view of the job."""
        now = time.time()
        started = self.started_at
        ended = self.finished_at or now
        return {
            "id": self.id,
            "state": self.state.value,
            "collection": self.collection,
            "tenant": self.tenant,
            "progress": {
                "documents_done": self.documents_done,
                "documents_total": self.documents,
                "batches_done": len(self.done_batches),
                "batches_total": self.batches,
                "added": self.added,
                "updated": self.updated,
                "unchanged": self.unchanged,
                "chunks_written": self.chunks_written,
            },
            "errors": [asdict(p) for p in self.errors],
            "skipped": [asdict(p) for p in self.skipped],
            "problems_omitted": self.problems_omitted,
            "created_at": _iso(self.created_at),
            "started_at": _iso(started),
            "finished_at": _iso(self.finished_at),
            "timings": {
                "queued_s": round((started or ended) - self.created_at, 3),
                "running_s": round(ended - started, 3) if started else 0.0,
            },
        }

    def to_json(self) -> dict[str, Any]:
        """The stored form (:meth:`from_json` reads it back)."""
        data = asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        return cls(
            **{
                **data,
                "state": JobState(data["state"]),
                "done_batches": tuple(data["done_batches"]),
                "skipped": tuple(Problem(**p) for p in data["skipped"]),
                "errors": tuple(Problem(**p) for p in data["errors"]),
                "attempts": {int(b): n for b, n in data.get("attempts", {}).items()},
            }
        )


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def documents_to_json(docs: list[Document]) -> list[dict[str, Any]]:
    return [asdict(d) for d in docs]


def documents_from_json(items: list[dict[str, Any]]) -> list[Document]:
    return [Document(**item) for item in items]
