"""Where jobs and their documents wait: SQLite under the data directory (embedded mode) or
Redis (a worker fleet; the broker's Redis, persisted with AOF).

A job and every batch of its documents are committed *before* the API answers 202, so an
accepted job survives ``kill -9``. Stores only read, write and atomically update; what an update
means lives in :class:`~service.jobs.model.Job`, so both stores behave the same.

Example::

    store = SqliteJobStore(Path("data/jobs.sqlite"))
    store.create(job, [[doc1, doc2], [doc3]])
    store.update(job.id, lambda j: j.record(0, outcome))
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from ingest.documents import Document

from .model import Job, documents_from_json, documents_to_json

Change = Callable[[Job], Job]


class JobStore(Protocol):
    def create(self, job: Job, batches: Sequence[Sequence[Document]]) -> None:
        """Store a job and its documents durably, in one step."""

    def get(self, job_id: str) -> Job | None: ...

    def update(self, job_id: str, change: Change) -> Job | None:
        """Apply ``change`` atomically (no other update interleaves); None if no such job."""

    def recent(self, tenant: str | None, limit: int) -> list[Job]:
        """Newest first; ``tenant=None`` = every tenant's."""

    def unfinished(self) -> list[Job]:
        """Queued and running jobs, oldest first."""

    def open_count(self, tenant: str | None = None) -> int:
        """How many jobs (of ``tenant``, or all) are queued or running."""

    def documents(self, job_id: str, batch: int) -> list[Document] | None:
        """A batch's documents; None once the batch is recorded (its documents are dropped)."""

    def drop_documents(self, job_id: str, batch: int) -> None: ...

    def purge(self, finished_before: float) -> int:
        """Forget finished jobs older than the given time; returns how many."""

    def close(self) -> None: ...


class SqliteJobStore:
    """Jobs in one SQLite file: WAL journal, ``synchronous=FULL`` so a commit is on disk."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(
                "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, tenant TEXT NOT NULL,"
                " finished INTEGER NOT NULL, created_at REAL NOT NULL, finished_at REAL,"
                " data TEXT NOT NULL);"
                "CREATE INDEX IF NOT EXISTS jobs_recent ON jobs (tenant, created_at);"
                "CREATE INDEX IF NOT EXISTS jobs_open ON jobs (finished, created_at);"
                "CREATE TABLE IF NOT EXISTS job_batches (job_id TEXT NOT NULL, batch INTEGER"
                " NOT NULL, documents TEXT NOT NULL, PRIMARY KEY (job_id, batch));"
            )

    def _row(self, job: Job) -> tuple[Any, ...]:
        return (
            job.tenant,
            int(job.state.finished),
            job.created_at,
            job.finished_at,
            json.dumps(job.to_json()),
            job.id,
        )

    def create(self, job: Job, batches: Sequence[Sequence[Document]]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO jobs (tenant, finished, created_at, finished_at, data, id)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    self._row(job),
                )
                self._db.executemany(
                    "INSERT INTO job_batches (job_id, batch, documents) VALUES (?, ?, ?)",
                    [
                        (job.id, n, json.dumps(documents_to_json(list(docs))))
                        for n, docs in enumerate(batches)
                    ],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_json(json.loads(row[0])) if row else None

    def update(self, job_id: str, change: Change) -> Job | None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT data FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is None:
                    self._db.execute("ROLLBACK")
                    return None
                job = change(Job.from_json(json.loads(row[0])))
                self._db.execute(
                    "UPDATE jobs SET tenant = ?, finished = ?, created_at = ?, finished_at = ?,"
                    " data = ? WHERE id = ?",
                    self._row(job),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return job

    def _jobs(self, sql: str, args: tuple[Any, ...]) -> list[Job]:
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [Job.from_json(json.loads(r[0])) for r in rows]

    def recent(self, tenant: str | None, limit: int) -> list[Job]:
        if tenant is None:
            return self._jobs("SELECT data FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,))
        return self._jobs(
            "SELECT data FROM jobs WHERE tenant = ? ORDER BY created_at DESC LIMIT ?",
            (tenant, limit),
        )

    def unfinished(self) -> list[Job]:
        return self._jobs("SELECT data FROM jobs WHERE finished = 0 ORDER BY created_at", ())

    def open_count(self, tenant: str | None = None) -> int:
        sql = "SELECT count(*) FROM jobs WHERE finished = 0"
        args: tuple[str, ...] = ()
        if tenant is not None:
            sql, args = sql + " AND tenant = ?", (tenant,)
        with self._lock:
            return int(self._db.execute(sql, args).fetchone()[0])

    def documents(self, job_id: str, batch: int) -> list[Document] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT documents FROM job_batches WHERE job_id = ? AND batch = ?", (job_id, batch)
            ).fetchone()
        return documents_from_json(json.loads(row[0])) if row else None

    def drop_documents(self, job_id: str, batch: int) -> None:
        with self._lock:
            self._db.execute(
                "DELETE FROM job_batches WHERE job_id = ? AND batch = ?", (job_id, batch)
            )

    def purge(self, finished_before: float) -> int:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                ids = [
                    r[0]
                    for r in self._db.execute(
                        "SELECT id FROM jobs WHERE finished = 1 AND finished_at < ?",
                        (finished_before,),
                    )
                ]
                self._db.executemany(
                    "DELETE FROM job_batches WHERE job_id = ?", [(i,) for i in ids]
                )
                self._db.executemany("DELETE FROM jobs WHERE id = ?", [(i,) for i in ids])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(ids)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class RedisJobStore:
    """Jobs in Redis, shared by the API replicas and the workers.

    Keys (under ``prefix``): ``job:<id>`` the job as JSON, ``job:<id>:batch:<n>`` a batch's
    documents, ``jobs`` and ``jobs:<tenant>`` sorted by creation time, ``jobs:open`` the
    unfinished ones. Updates are optimistic transactions (WATCH / MULTI), retried on conflict.
    """

    def __init__(self, url: str, prefix: str = "grounded:") -> None:
        import redis

        # Timeouts: a hung Redis must fail a request (503), not hang the API's threads.
        self._redis = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        self._prefix = prefix

    def _key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    def _write(self, pipe: Any, job: Job) -> None:
        pipe.set(self._key("job", job.id), json.dumps(job.to_json()))
        for index in (self._key("jobs", "open"), self._key("jobs", "open", job.tenant)):
            if job.state.finished:
                pipe.zrem(index, job.id)
            else:
                pipe.zadd(index, {job.id: job.created_at})

    def create(self, job: Job, batches: Sequence[Sequence[Document]]) -> None:
        pipe = self._redis.pipeline(transaction=True)
        for n, docs in enumerate(batches):
            pipe.set(
                self._key("job", job.id, "batch", str(n)),
                json.dumps(documents_to_json(list(docs))),
            )
        self._write(pipe, job)
        pipe.zadd(self._key("jobs"), {job.id: job.created_at})
        pipe.zadd(self._key("jobs", "tenant", job.tenant), {job.id: job.created_at})
        pipe.execute()

    def get(self, job_id: str) -> Job | None:
        raw = self._redis.get(self._key("job", job_id))
        return Job.from_json(json.loads(raw)) if raw else None

    def update(self, job_id: str, change: Change) -> Job | None:
        import redis

        key = self._key("job", job_id)
        while True:
            with self._redis.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        return None
                    job = change(Job.from_json(json.loads(raw)))
                    pipe.multi()
                    self._write(pipe, job)
                    pipe.execute()
                    return job
                except redis.WatchError:
                    continue

    def _load(self, ids: Sequence[object]) -> list[Job]:
        """The jobs of a ZRANGE's members (bytes: this client does not decode responses)."""
        if not ids:
            return []
        names = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
        raws = self._redis.mget([self._key("job", name) for name in names])
        return [Job.from_json(json.loads(r)) for r in raws if r]

    def recent(self, tenant: str | None, limit: int) -> list[Job]:
        index = self._key("jobs") if tenant is None else self._key("jobs", "tenant", tenant)
        return self._load(self._redis.zrevrange(index, 0, limit - 1))

    def unfinished(self) -> list[Job]:
        return self._load(self._redis.zrange(self._key("jobs", "open"), 0, -1))

    def open_count(self, tenant: str | None = None) -> int:
        index = self._key("jobs", "open") if tenant is None else self._key("jobs", "open", tenant)
        return int(self._redis.zcard(index))

    def documents(self, job_id: str, batch: int) -> list[Document] | None:
        raw = self._redis.get(self._key("job", job_id, "batch", str(batch)))
        return documents_from_json(json.loads(raw)) if raw else None

    def drop_documents(self, job_id: str, batch: int) -> None:
        self._redis.delete(self._key("job", job_id, "batch", str(batch)))

    def purge(self, finished_before: float) -> int:
        # Finished jobs only: the oldest by creation first, stopping at the first still-young one
        # would miss long jobs, so check each of the oldest few hundred.
        ids = self._redis.zrange(self._key("jobs"), 0, 499)
        purged = 0
        for job in self._load(ids):
            if job.state.finished and (job.finished_at or time.time()) < finished_before:
                pipe = self._redis.pipeline(transaction=True)
                pipe.delete(self._key("job", job.id))
                for n in range(job.batches):
                    pipe.delete(self._key("job", job.id, "batch", str(n)))
                pipe.zrem(self._key("jobs"), job.id)
                pipe.zrem(self._key("jobs", "tenant", job.tenant), job.id)
                pipe.execute()
                purged += 1
        return purged

    def close(self) -> None:
        self._redis.close()


def open_job_store(broker_url: str | None, sqlite_path: Path) -> JobStore:
    """Redis when a broker is configured (a fleet shares it), else SQLite in the data dir."""
    if broker_url:
        return RedisJobStore(broker_url)
    return SqliteJobStore(sqlite_path)
