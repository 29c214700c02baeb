"""Writes through the running service: the way to ingest while it owns an embedded shard.

Ingests become jobs (:mod:`service.jobs`), stored before the 202 and run by the service's job
thread or a Celery fleet. Deletes wait in the app's bounded
:class:`~service.write_queue.WriteQueue`, never on the thread pool that searches and health
checks use; a full queue answers 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from ingest.names import NAME_PATTERN

from ...requests import ingest_documents
from ...responses import report_of
from ..deps import Ingester, JobsDep, PipelineDep, SourceReader, WriteQueueDep
from ..schemas import DeleteRequest, IngestReportOut, IngestRequest, JobOut

router = APIRouter(prefix="/v1", tags=["documents"])

WAIT_TIMEOUT_S = 300.0
"""``?wait=true`` answers 202 with the job when it has not finished by then."""

CollectionPath = Annotated[str, Path(pattern=NAME_PATTERN, max_length=64)]


@router.post(
    "/ingest",
    status_code=202,
    response_model=JobOut,
    responses={200: {"model": IngestReportOut, "description": "?wait=true: the finished job."}},
)
async def ingest(
    body: IngestRequest,
    pipeline: PipelineDep,
    jobs: JobsDep,
    caller: Ingester,
    wait: Annotated[
        bool, Query(description="Answer when the job finished (small batches), not at once.")
    ] = False,
) -> Any:
    """Queue documents for chunking, embedding and upserting: 202 with the job (``Location:
    /v1/jobs/{id}``); the job is stored before this answers. Unchanged documents are skipped,
    changed ones replaced, empty ones reported under ``skipped``."""
    docs = ingest_documents(body, pipeline.settings)
    collection = body.collection or pipeline.settings.collection
    # A collection built with another embedding model: 409 now, not a job of failures later.
    await asyncio.to_thread(pipeline.check_writable, collection)
    job = await asyncio.to_thread(jobs.submit, docs, collection, caller.tenant)
    location = {"Location": f"/v1/jobs/{job.id}"}
    if wait:
        job = await jobs.wait(job.id, caller.tenant, WAIT_TIMEOUT_S)
        if job.state.finished:
            return JSONResponse(report_of(job), headers=location)
    return JSONResponse(job.to_dict(), status_code=202, headers=location)


@router.post("/delete")
async def delete(
    body: DeleteRequest, pipeline: PipelineDep, queue: WriteQueueDep, caller: Ingester
) -> dict[str, int]:
    """Remove documents (all their chunks) by id."""
    collection = body.collection or pipeline.settings.collection
    job = queue.submit(lambda: pipeline.delete(body.doc_ids, collection, caller.tenant))
    return {"deleted": await asyncio.wrap_future(job)}


@router.get("/collections/{collection}/sources")
def sources(
    collection: CollectionPath, pipeline: PipelineDep, caller: SourceReader
) -> dict[str, str]:
    """``doc_id -> source`` for every document: what ``grounded ingest --prune`` compares with."""
    return pipeline.document_sources(collection, caller.tenant)
