"""HTTP client for a running grounded service; the CLI's ``--server`` mode.

:class:`RemoteIngestTarget` implements :class:`ingest.pipeline.IngestTarget`, so ``grounded
ingest --server URL`` runs the same loop as a local ingest while the service owns the shard.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import httpx
from httpx_sse import SSEError, connect_sse

from ingest.documents import Document
from ingest.loaders import LoadFailure
from ingest.pipeline import IngestReport, ProgressFn, Skipped, batched

BUSY_WAIT_S = 300.0


class ServiceError(Exception):
    """The service answered with an error; the message carries its reason."""


class GroundedClient:
    """``api_key`` defaults to ``GROUNDED_API_KEY``; it is sent as a bearer token."""

    def __init__(self, base_url: str, timeout: float = 600.0, api_key: str | None = None) -> None:
        key = api_key or os.environ.get("GROUNDED_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, headers=headers)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ServiceError(f"{response.status_code}: {detail}")
        return response.json()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; a full ingest queue (503) or a spent rate limit (429) is waited out
        as the service's ``Retry-After`` says, up to ``BUSY_WAIT_S`` in all."""
        waited = 0.0
        while True:
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                raise ServiceError(
                    f"cannot reach grounded at {self.http.base_url}: {exc}"
                ) from None
            retry_after = response.headers.get("Retry-After", "")
            if response.status_code not in (429, 503) or not retry_after.isdigit():
                return response
            delay = min(float(retry_after), 30.0)
            if waited + delay > BUSY_WAIT_S:
                return response
            time.sleep(delay)
            waited += delay

    def search(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/v1/search", json=body)

    def query(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/v1/query", json=body)

    def query_stream(self, body: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(event, data)`` pairs of ``POST /v1/query`` with ``stream: true``."""
        try:
            with connect_sse(
                self.http, "POST", "/v1/query", json={**body, "stream": True}
            ) as source:
                if source.response.status_code >= 400:
                    source.response.read()
                    try:
                        detail = source.response.json().get("detail", source.response.text)
                    except ValueError:
                        detail = source.response.text
                    raise ServiceError(f"{source.response.status_code}: {detail}")
                for event in source.iter_sse():
                    yield event.event, json.loads(event.data)
        except (httpx.HTTPError, SSEError) as exc:
            raise ServiceError(f"stream from {self.http.base_url} failed: {exc}") from None

    def submit_ingest(
        self, collection: str, docs: Sequence[Document], wait: bool = False
    ) -> dict[str, Any]:
        """``POST /v1/ingest``: the job (202), or with ``wait`` its report once finished."""
        payload = {
            "collection": collection,
            "documents": [
                {
                    "id": d.id,
                    "text": d.text,
                    "title": d.title,
                    "source": d.source,
                    "metadata": d.metadata,
                }
                for d in docs
            ],
        }
        return self._call("POST", "/v1/ingest", json=payload, params={"wait": wait})

    def ingest(self, collection: str, docs: Sequence[Document]) -> dict[str, Any]:
        """Ingest and wait for the report (small batches)."""
        return self.submit_ingest(collection, docs, wait=True)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{job_id}")

    def jobs(self, limit: int = 50) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/jobs", params={"limit": limit})

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/jobs/{job_id}")

    def delete(self, collection: str, doc_ids: Sequence[str]) -> int:
        return int(
            self._call(
                "POST", "/v1/delete", json={"collection": collection, "doc_ids": list(doc_ids)}
            )["deleted"]
        )

    def sources(self, collection: str) -> dict[str, str]:
        try:
            return self._call("GET", f"/v1/collections/{collection}/sources")
        except ServiceError as exc:
            if str(exc).startswith("404"):
                return {}
            raise


FINISHED = ("succeeded", "failed", "cancelled")


class RemoteIngestTarget:
    """Submits documents as ingest jobs (``POST /v1/ingest``, one per batch) and follows them
    until they finish; progress counts what the service's workers have written.

    At most ``in_flight`` jobs are open at once: one client neither fills the service's job
    queue (shared by the tenant's other clients) nor spends its rate limit on polling.
    """

    def __init__(
        self,
        client: GroundedClient,
        collection: str,
        batch_docs: int = 64,
        poll_s: float = 1.0,
        in_flight: int = 4,
    ) -> None:
        self.client = client
        self.collection = collection
        self.batch_docs = batch_docs
        self.poll_s = poll_s
        self.in_flight = in_flight

    def ingest(
        self, documents: Iterable[Document], progress: ProgressFn | None = None
    ) -> IngestReport:
        started = time.perf_counter()
        jobs: dict[str, dict[str, Any]] = {}
        for batch in batched(documents, self.batch_docs):
            while self._refresh(jobs, progress) >= self.in_flight:
                time.sleep(self.poll_s)
            job = self.client.submit_ingest(self.collection, batch)
            jobs[job["id"]] = job
        while self._refresh(jobs, progress):
            time.sleep(self.poll_s)
        report = job_report(jobs.values())
        report.seconds = time.perf_counter() - started
        return report

    def _refresh(self, jobs: dict[str, dict[str, Any]], progress: ProgressFn | None) -> int:
        """Re-read unfinished jobs; returns how many are still unfinished."""
        for job_id, job in jobs.items():
            if job["state"] not in FINISHED:
                jobs[job_id] = self.client.job(job_id)
        if progress:
            done = sum(j["progress"]["documents_done"] for j in jobs.values())
            progress(done, sum(j["progress"]["chunks_written"] for j in jobs.values()))
        return sum(j["state"] not in FINISHED for j in jobs.values())

    def delete(self, doc_ids: Sequence[str]) -> int:
        return self.client.delete(self.collection, doc_ids)

    def document_sources(self) -> dict[str, str]:
        return self.client.sources(self.collection)


def job_report(jobs: Iterable[dict[str, Any]]) -> IngestReport:
    """Finished jobs (the API's view) summed into one report; failed documents and cancelled
    jobs become failures."""
    report = IngestReport()
    for job in jobs:
        counts = job["progress"]
        report.add(
            IngestReport(
                added=counts["added"],
                updated=counts["updated"],
                unchanged=counts["unchanged"],
                chunks_written=counts["chunks_written"],
                skipped=[Skipped(s["id"], s["reason"]) for s in job["skipped"]],
                failures=[LoadFailure(e["id"], e["reason"]) for e in job["errors"]],
            )
        )
        if job["state"] == "cancelled":
            report.failures.append(LoadFailure(f"job {job['id']}", "cancelled"))
    return report
