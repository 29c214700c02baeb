"""Ingest jobs on a real Celery fleet: a real Redis server (broker and job store), real workers.

- through the API, with a worker thread in the test process (solo pool) writing to a
  qdrant-client local-mode index (which belongs to one process);
- with `grounded worker` as separate processes on an embedded shard: one is SIGKILLed mid-job,
  its task is redelivered to the next, and the job ends with exactly the chunks of a clean run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker
from fastapi.testclient import TestClient
from qdrant_client import QdrantClient
from support.cli_runner import REPO
from support.jobs import chunk_set, clean_chunk_set, corpus

from ingest.embedding import SentenceTransformerEmbedder
from ingest.index import EdgeIndex
from ingest.index.server import ServerIndex
from ingest.settings import Settings
from service.api.app import create_app
from service.jobs import Job, JobService, JobState
from service.jobs.celery_app import (
    CeleryDispatcher,
    WorkerContext,
    make_celery,
    use_worker_context,
)
from service.jobs.store import RedisJobStore
from service.pipeline import RagPipeline

pytestmark = pytest.mark.slow


def test_api_jobs_run_on_a_celery_worker(
    redis_url: str, tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", broker_url=redis_url, collection="kb", job_batch_docs=3
    )
    index = ServerIndex(QdrantClient(path=str(tmp_path / "qdrant")))
    pipeline = RagPipeline.from_settings(settings, index=index, embedder=embedder)
    worker_app = make_celery(settings)
    use_worker_context(WorkerContext(settings, RedisJobStore(redis_url), pipeline.ingest))
    docs = corpus(8)
    try:
        with (
            start_worker(worker_app, pool="solo", perform_ping_check=False, loglevel="WARNING"),
            TestClient(create_app(pipeline)) as client,
        ):
            body = {"documents": [{"id": d.id, "text": d.text, "title": d.title} for d in docs]}
            response = client.post("/v1/ingest", json=body)
            assert response.status_code == 202, response.text
            assert response.json()["progress"]["batches_total"] == 3
            deadline = time.monotonic() + 120
            while (job := client.get(response.headers["Location"]).json())["state"] not in (
                "succeeded",
                "failed",
            ):
                assert time.monotonic() < deadline, job
                time.sleep(0.1)
            assert job["state"] == "succeeded", job
            assert job["progress"]["added"] == 8 and job["errors"] == []
            points = chunk_set(index, "kb")
            assert len(points) == job["progress"]["chunks_written"]
            assert {doc for doc, _, _ in points.values()} == {d.id for d in docs}
            hits = client.post("/v1/search", json={"query": "comets", "top_k": 3}).json()
            assert hits["results"], hits
    finally:
        use_worker_context(None)


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker", "--concurrency", "1"],
            env=env,
            cwd=REPO,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the whole worker (parent and pool) can be killed at once
        )


def _stop(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        proc.wait(60)


def test_a_worker_killed_mid_job_loses_and_duplicates_nothing(
    redis_url: str,
    tmp_path: Path,
    embedder: SentenceTransformerEmbedder,
) -> None:
    data_dir = tmp_path / "fleet"
    settings = Settings(
        data_dir=data_dir,
        broker_url=redis_url.replace("/0", "/3"),
        collection="kb",
        job_batch_docs=4,
        task_time_limit=10,
        broker_visibility_timeout=12,
    )
    env = {
        **os.environ,
        "GROUNDED_DATA_DIR": str(data_dir),
        "GROUNDED_BROKER_URL": settings.broker_url or "",
        "GROUNDED_TASK_TIME_LIMIT": "10",
        "GROUNDED_BROKER_VISIBILITY_TIMEOUT": "12",
        "GROUNDED_WORKER_THREADS": "1",
    }
    docs = corpus(48)
    log = tmp_path / "workers.log"
    jobs = JobService(
        RedisJobStore(settings.broker_url or ""),
        CeleryDispatcher(make_celery(settings)),
        batch_docs=settings.job_batch_docs,
    )
    first = _worker(env, log)
    second = None
    try:
        job = jobs.submit(docs, "kb", "default")
        assert job.batches == 12
        deadline = time.monotonic() + 180
        while jobs.get(job.id, None).documents_done < 8:  # mid-job: some batches are written
            assert first.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        _stop(first, signal.SIGKILL)
        killed_at = jobs.get(job.id, None)
        assert killed_at.state is JobState.RUNNING

        second = _worker(env, log)
        deadline = time.monotonic() + 240
        while not (final := jobs.get(job.id, None)).state.finished:
            assert second.poll() is None, log.read_text()
            assert time.monotonic() < deadline, (final, log.read_text())
            time.sleep(0.2)
    finally:
        _stop(first, signal.SIGKILL)
        if second is not None:
            _stop(second, signal.SIGTERM)
    assert final.state is JobState.SUCCEEDED, (final, log.read_text())
    assert final.documents_done == 48 and final.errors == ()
    assert final.added + final.unchanged == 48  # a batch the dead worker half-wrote: unchanged

    served = EdgeIndex(data_dir)
    try:
        got = chunk_set(served, "kb")
        assert served.count("kb") == len(got)
    finally:
        served.close()
    assert got == clean_chunk_set(settings, embedder, docs, tmp_path / "clean")
    assert isinstance(killed_at, Job)
