"""Ingest jobs: the job model, both stores (SQLite and a real Redis), the embedded runner, and
the API's 202 / ``GET /v1/jobs`` / cancel over a real Edge shard and the real model."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from ingest.documents import Document
from ingest.embedding import SentenceTransformerEmbedder
from ingest.index import EdgeIndex
from ingest.pipeline import IngestReport
from ingest.settings import Settings
from service.api.app import create_app
from service.jobs import BatchOutcome, Job, JobService, JobState, JobsUnavailable, Problem
from service.jobs.local import LocalJobRunner
from service.jobs.model import MAX_LISTED_PROBLEMS
from service.jobs.runner import run_batch
from service.jobs.service import NoDispatch
from service.jobs.store import JobStore, RedisJobStore, SqliteJobStore
from service.pipeline import RagPipeline
from service.write_queue import QueueFull


def docs(n: int, prefix: str = "d") -> list[Document]:
    return [
        Document(f"{prefix}{i}", f"Note {i} is about topic {i % 5}. It has a second sentence.")
        for i in range(n)
    ]


# the job model -------------------------------------------------------------------------------
def test_a_batch_counts_once_and_the_last_batch_finishes_the_job() -> None:
    job = Job.new("kb", "default", documents=5, batches=2)
    outcome = BatchOutcome(documents=3, added=3, chunks_written=6)
    job = job.record(0, outcome)
    assert job.state is JobState.RUNNING and job.started_at is not None
    assert job.record(0, outcome) == job  # a redelivered batch changes nothing
    job = job.record(1, BatchOutcome(documents=2, unchanged=2))
    assert job.state is JobState.SUCCEEDED and job.finished_at is not None
    assert (job.documents_done, job.added, job.unchanged, job.chunks_written) == (5, 3, 2, 6)


def test_a_failed_document_fails_the_job_and_is_listed() -> None:
    job = Job.new("kb", "default", documents=2, batches=1)
    job = job.record(0, BatchOutcome(documents=2, added=1, errors=(Problem("bad", "boom"),)))
    assert job.state is JobState.FAILED
    assert job.to_dict()["errors"] == [{"id": "bad", "reason": "boom"}]


def test_problems_beyond_the_cap_are_counted_not_listed() -> None:
    many = tuple(Problem(f"e{i}", "x") for i in range(MAX_LISTED_PROBLEMS + 5))
    job = Job.new("kb", "default", documents=len(many), batches=1).record(
        0, BatchOutcome(documents=len(many), errors=many)
    )
    assert len(job.errors) == MAX_LISTED_PROBLEMS and job.problems_omitted == 5


def test_cancel_stops_a_job_but_not_a_finished_one() -> None:
    job = Job.new("kb", "default", documents=3, batches=3).record(0, BatchOutcome(documents=1))
    cancelled = job.cancel()
    assert cancelled.state is JobState.CANCELLED and cancelled.pending_batches() == []
    done = Job.new("kb", "default", documents=1, batches=1).record(0, BatchOutcome(documents=1))
    assert done.cancel() == done


def test_an_empty_job_is_finished_on_arrival() -> None:
    assert Job.new("kb", "default", documents=0, batches=0).state is JobState.SUCCEEDED


def test_a_job_survives_its_stored_form() -> None:
    job = Job.new("kb", "acme", documents=2, batches=2).record(
        1, BatchOutcome(documents=1, skipped=(Problem("e", "empty"),))
    )
    assert Job.from_json(job.to_json()) == job


# both stores ---------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    made: JobStore
    if request.param == "sqlite":
        made = SqliteJobStore(tmp_path / "jobs.sqlite")
    else:
        made = RedisJobStore(request.getfixturevalue("redis_url"), prefix=f"t{time.time_ns()}:")
    yield made
    made.close()


def test_store_keeps_jobs_and_their_documents(store: JobStore) -> None:
    job = Job.new("kb", "acme", documents=3, batches=2)
    store.create(job, [docs(2), docs(1, "x")])
    assert store.get(job.id) == job
    assert store.documents(job.id, 1) == docs(1, "x")
    assert [j.id for j in store.unfinished()] == [job.id] and store.open_count() == 1
    store.update(job.id, lambda j: j.record(0, BatchOutcome(documents=2)))
    store.drop_documents(job.id, 0)
    assert store.documents(job.id, 0) is None
    finished = store.update(job.id, lambda j: j.record(1, BatchOutcome(documents=1)))
    assert finished is not None and finished.state is JobState.SUCCEEDED
    assert store.unfinished() == [] and store.open_count() == 0
    assert store.update("0" * 32, Job.cancel) is None


def test_store_lists_newest_first_per_tenant(store: JobStore) -> None:
    made = []
    for tenant in ["acme", "globex", "acme"]:
        job = Job.new("kb", tenant, documents=1, batches=1)
        store.create(job, [docs(1)])
        made.append(job)
        time.sleep(0.002)
    assert [j.id for j in store.recent("acme", 10)] == [made[2].id, made[0].id]
    assert [j.id for j in store.recent(None, 2)] == [made[2].id, made[1].id]


def _one_added(batch: int) -> Callable[[Job], Job]:
    """Records ``batch`` as one document added."""
    return lambda job: job.record(batch, BatchOutcome(documents=1, added=1))


def test_store_updates_are_atomic(store: JobStore) -> None:
    """Eight threads recording 40 batches at once lose none of them."""
    job = Job.new("kb", "default", documents=40, batches=40)
    store.create(job, [docs(1) for _ in range(40)])

    def record(batches: range) -> None:
        for b in batches:
            store.update(job.id, _one_added(b))

    threads = [threading.Thread(target=record, args=(range(i, 40, 8),)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = store.get(job.id)
    assert final is not None and final.state is JobState.SUCCEEDED
    assert (final.documents_done, final.added, len(final.done_batches)) == (40, 40, 40)


def test_store_purges_only_old_finished_jobs(store: JobStore) -> None:
    old = Job.new("kb", "default", documents=1, batches=1)
    store.create(old, [docs(1)])
    store.update(old.id, lambda j: j.record(0, BatchOutcome(documents=1)))
    open_job = Job.new("kb", "default", documents=1, batches=1)
    store.create(open_job, [docs(1)])
    assert store.purge(time.time() + 1) == 1
    assert store.get(old.id) is None and store.get(open_job.id) is not None


# the runner, with a scripted ingest function ---------------------------------------------------
class ScriptedIngest:
    """Writes nothing; fails documents whose id starts with ``bad`` and raises a transient
    error for the first ``flaky`` calls."""

    def __init__(self, flaky: int = 0) -> None:
        self.flaky = flaky
        self.calls: list[list[str]] = []
        self.tenants: set[str] = set()

    def __call__(self, documents: list[Document], collection: str, *, tenant: str) -> IngestReport:
        self.calls.append([d.id for d in documents])
        self.tenants.add(tenant)
        if self.flaky:
            self.flaky -= 1
            raise ConnectionError("qdrant went away")
        if any(d.id.startswith("bad") for d in documents):
            raise ValueError("cannot parse this one")
        return IngestReport(added=len(documents), chunks_written=2 * len(documents))


def _service(store: JobStore, ingest: ScriptedIngest, batch_docs: int = 2) -> JobService:
    runner = LocalJobRunner(store, ingest, max_retries=3, backoff=0.01, idle_poll_s=0.05)
    return JobService(store, runner, batch_docs=batch_docs, max_open_jobs=3)


def _finished(service: JobService, job_id: str, timeout: float = 30) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = service.get(job_id, None)
        if job.state.finished:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish: {service.get(job_id, None)}")


def test_a_bad_document_fails_alone(tmp_path: Path) -> None:
    ingest = ScriptedIngest()
    service = _service(SqliteJobStore(tmp_path / "j.sqlite"), ingest, batch_docs=4)
    batch = [*docs(3), Document("bad-1", "x"), *docs(2, "y")]
    job = _finished(service, service.submit(batch, "kb", "acme").id)
    assert ingest.tenants == {"acme"}
    assert job.state is JobState.FAILED
    assert [e.id for e in job.errors] == ["bad-1"] and "cannot parse" in job.errors[0].reason
    assert job.added == 5 and job.documents_done == 6
    # the failing batch was retried one document at a time; the clean batch ran once
    assert ingest.calls[0] == ["d0", "d1", "d2", "bad-1"]
    assert ingest.calls[1:5] == [["d0"], ["d1"], ["d2"], ["bad-1"]]
    service.close()


def test_transient_errors_are_retried_then_given_up(tmp_path: Path) -> None:
    ingest = ScriptedIngest(flaky=2)
    service = _service(SqliteJobStore(tmp_path / "j.sqlite"), ingest)
    job = _finished(service, service.submit(docs(2), "kb", "default").id)
    assert job.state is JobState.SUCCEEDED and job.added == 2
    assert len(ingest.calls) == 3  # two failures, then success

    hopeless = ScriptedIngest(flaky=100)
    service = _service(SqliteJobStore(tmp_path / "k.sqlite"), hopeless)
    job = _finished(service, service.submit(docs(2), "kb", "default").id)
    assert job.state is JobState.FAILED and len(hopeless.calls) == 4  # 1 + max_retries
    assert all("gave up after 4 attempts: ConnectionError" in e.reason for e in job.errors)
    service.close()


def test_open_jobs_are_bounded(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "j.sqlite")
    service = JobService(store, NoDispatch(), batch_docs=2, max_open_jobs=3)
    for _ in range(3):
        service.submit(docs(1), "kb", "default")
    with pytest.raises(QueueFull) as full:
        service.submit(docs(1), "kb", "default")
    assert full.value.retry_after > 0


def test_a_restarted_runner_resumes_interrupted_jobs(tmp_path: Path) -> None:
    """A job whose process died after batch 0 (batch 1 "running"): a new runner over the same
    file runs only the batches not recorded."""
    path = tmp_path / "j.sqlite"
    store = SqliteJobStore(path)
    job = Job.new("kb", "default", documents=6, batches=3)
    store.create(job, [docs(2, "a"), docs(2, "b"), docs(2, "c")])
    run_batch(store, job.id, 0, ScriptedIngest(), 3)
    store.close()

    ingest = ScriptedIngest()
    service = _service(SqliteJobStore(path), ingest)
    service.start()
    done = _finished(service, job.id)
    assert done.state is JobState.SUCCEEDED and done.added == 6
    assert ingest.calls == [["b0", "b1"], ["c0", "c1"]]
    service.close()


def test_a_cancelled_job_runs_no_more_batches(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "j.sqlite")
    service = JobService(store, NoDispatch(), batch_docs=1)
    job = service.submit(docs(3), "kb", "acme")
    run_batch(store, job.id, 0, ScriptedIngest(), 3)
    assert service.cancel(job.id, "acme").state is JobState.CANCELLED
    ingest = ScriptedIngest()
    run_batch(store, job.id, 1, ingest, 3)
    assert ingest.calls == []
    assert service.get(job.id, None).documents_done == 1


# through the API, on the real model and an Edge shard ------------------------------------------
@pytest.fixture
def api(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", collection="kb", job_batch_docs=4)
    pipeline = RagPipeline.from_settings(
        settings, index=EdgeIndex(settings.data_dir), embedder=embedder
    )
    with TestClient(create_app(pipeline)) as client:
        yield client


def _wait(client: TestClient, location: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(location).json()
        if body["state"] in ("succeeded", "failed", "cancelled"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"job at {location} did not finish")


def test_ingest_answers_202_with_a_job_that_finishes(api: TestClient) -> None:
    body = [{"id": d.id, "text": d.text} for d in docs(10)] + [{"id": "blank", "text": " "}]
    response = api.post("/v1/ingest", json={"documents": body})
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["progress"]["documents_total"] == 11 and job["progress"]["batches_total"] == 3
    final = _wait(api, response.headers["Location"])
    assert final["state"] == "succeeded"
    assert final["progress"]["added"] == 10 and final["progress"]["documents_done"] == 11
    assert final["skipped"] == [{"id": "blank", "reason": "empty document: no text"}]
    assert final["progress"]["chunks_written"] == 10  # one short chunk per note
    assert final["timings"]["running_s"] > 0
    hits = api.post("/v1/search", json={"query": "Note 7", "top_k": 3}).json()["results"]
    assert "d7" in {h["doc_id"] for h in hits}
    assert [j["id"] for j in api.get("/v1/jobs").json()] == [job["id"]]


def test_wait_true_answers_with_the_report(api: TestClient) -> None:
    body = {"documents": [{"id": "a", "text": "Alpha is the first letter."}]}
    first = api.post("/v1/ingest?wait=true", json=body)
    assert first.status_code == 200, first.text
    assert first.json()["added"] == 1 and first.json()["state"] == "succeeded"
    again = api.post("/v1/ingest?wait=true", json=body).json()
    assert again["unchanged"] == 1 and again["chunks_written"] == 0
    job_id = again["job_id"]
    assert api.delete(f"/v1/jobs/{job_id}").status_code == 409  # finished already
    assert api.get(f"/v1/jobs/{'0' * 32}").status_code == 404
    assert api.get("/v1/jobs/not-a-job-id").status_code == 422
    assert "grounded_jobs_open 0.0" in api.get("/metrics").text


def test_jobs_open_is_a_metric(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "j.sqlite")
    service = JobService(store, NoDispatch())
    service.submit(docs(2), "kb", "default")
    from prometheus_client import REGISTRY

    from service import metrics

    metrics.set_jobs_open(service.store.open_count)
    assert REGISTRY.get_sample_value("grounded_jobs_open") == 1.0


def test_jobs_cli_lists_shows_and_cancels_from_the_store(tmp_path: Path) -> None:
    import json

    from support.cli_runner import grounded

    data = tmp_path / "data"
    assert "no ingest jobs yet" in grounded("jobs", data_dir=data, check_rc=1).stderr
    store = SqliteJobStore(data / "jobs.sqlite")
    service = JobService(store, NoDispatch(), batch_docs=2)
    job = service.submit(docs(5), "kb", "acme")
    listed = json.loads(grounded("jobs", "--json", data_dir=data).stdout)
    assert [(j["id"], j["state"], j["tenant"]) for j in listed] == [(job.id, "queued", "acme")]
    shown = json.loads(grounded("jobs", "show", job.id, data_dir=data).stdout)
    assert shown["progress"]["batches_total"] == 3
    assert "cancelled" in grounded("jobs", "cancel", job.id, data_dir=data).stdout
    assert service.get(job.id, None).state is JobState.CANCELLED
    again = grounded("jobs", "cancel", job.id, data_dir=data, check_rc=1)
    assert "already cancelled" in again.stderr
    assert "no ingest job" in grounded("jobs", "show", "0" * 32, data_dir=data, check_rc=1).stderr


# what a review found: bounded redeliveries, dispatch failures, per-tenant caps, early 409 --------
def test_a_batch_whose_worker_dies_every_time_is_given_up(tmp_path: Path) -> None:
    """Each start is counted in the job; a delivery beyond the budget fails the batch's
    documents instead of running (and killing its worker) again."""
    store = SqliteJobStore(tmp_path / "j.sqlite")
    job = Job.new("kb", "default", documents=2, batches=1)
    store.create(job, [docs(2)])
    for _ in range(3):  # three deliveries whose process died mid-batch
        store.update(job.id, lambda j: j.begin(0))
    ingest = ScriptedIngest()
    final = run_batch(store, job.id, 0, ingest, 3)
    assert ingest.calls == [] and final is not None and final.state is JobState.FAILED
    assert [e.id for e in final.errors] == ["d0", "d1"]
    assert "started 3 times without finishing" in final.errors[0].reason


class _BrokenDispatch(NoDispatch):
    def submit(self, job: Job) -> None:
        raise ConnectionError("broker unreachable")


def test_a_job_the_workers_cannot_get_is_not_left_queued(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "j.sqlite")
    service = JobService(store, _BrokenDispatch())
    with pytest.raises(JobsUnavailable, match="broker unreachable"):
        service.submit(docs(2), "kb", "default")
    assert store.open_count() == 0
    assert [j.state for j in store.recent(None, 5)] == [JobState.CANCELLED]


def test_one_tenant_cannot_fill_the_job_queue_for_all(tmp_path: Path) -> None:
    service = JobService(SqliteJobStore(tmp_path / "j.sqlite"), NoDispatch(), max_open_jobs=2)
    for _ in range(2):
        service.submit(docs(1), "kb", "noisy")
    with pytest.raises(QueueFull):
        service.submit(docs(1), "kb", "noisy")
    assert service.submit(docs(1), "kb", "quiet").state is JobState.QUEUED


def test_another_models_collection_is_refused_before_a_job(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"documents": [{"id": "a", "text": "Alpha is the first letter."}]}
    assert api.post("/v1/ingest?wait=true", json=body).status_code == 200
    app = api.app
    assert isinstance(app, FastAPI)
    index = app.state.pipeline.index
    built = index.manifest("kb")
    monkeypatch.setattr(index, "manifest", lambda _name: replace(built, model="another-model"))
    refused = api.post("/v1/ingest", json=body)
    assert refused.status_code == 409, refused.text
    assert "another-model" in refused.json()["detail"]
    assert len(api.get("/v1/jobs").json()) == 1  # no job was made


def test_an_unreachable_job_store_is_a_503(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    settings = Settings(data_dir=tmp_path / "data", collection="kb")
    pipeline = RagPipeline.from_settings(
        settings, index=EdgeIndex(settings.data_dir), embedder=embedder
    )
    down = JobService(RedisJobStore("redis://127.0.0.1:1/0"), NoDispatch())
    with TestClient(create_app(pipeline, jobs=down)) as client:
        response = client.post("/v1/ingest", json={"documents": [{"id": "a", "text": "Alpha."}]})
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "5" and "store is unavailable" in response.text
        assert client.get("/healthz").status_code == 200
