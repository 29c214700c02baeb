"""The embedded mode survives ``kill -9``: a job accepted by `grounded serve` (202) finishes
after a restart, with exactly the chunks of a clean run — nothing lost, nothing twice."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from support.jobs import chunk_set, clean_chunk_set, corpus
from support.serve import serving

from ingest.embedding import SentenceTransformerEmbedder
from ingest.index import EdgeIndex
from ingest.settings import Settings

pytestmark = pytest.mark.slow


def _job(url: str, job_id: str) -> dict:
    return httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()


def test_serve_killed_mid_job_finishes_it_after_restart(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    data = tmp_path / "data"
    env = {"GROUNDED_JOB_BATCH_DOCS": "4", "GROUNDED_COLLECTION": "kb"}
    docs = corpus(48)
    body = {"documents": [{"id": d.id, "text": d.text, "title": d.title} for d in docs]}
    with serving(data, env=env) as served:
        accepted = httpx.post(f"{served.url}/v1/ingest", json=body, timeout=30)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["id"]
        deadline = time.monotonic() + 180
        while (job := _job(served.url, job_id))["progress"]["documents_done"] < 8:
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        served.kill()
    assert job["state"] == "running" and job["progress"]["documents_done"] < 48

    with serving(data, env=env) as served:  # resumes the job on start
        deadline = time.monotonic() + 240
        while (job := _job(served.url, job_id))["state"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
    assert job["state"] == "succeeded", job
    progress = job["progress"]
    assert progress["documents_done"] == 48 and job["errors"] == []
    assert progress["added"] + progress["unchanged"] == 48

    index = EdgeIndex(data)
    try:
        got = chunk_set(index, "kb")
    finally:
        index.close()
    expected = clean_chunk_set(Settings(), embedder, docs, tmp_path / "clean")
    assert got == expected
