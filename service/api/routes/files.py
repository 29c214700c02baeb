"""``POST /v1/files``: upload files (the playground's drag and drop) as one ingest job.

The files become documents with the loaders ``grounded ingest`` uses (:mod:`service.uploads`),
and the documents go in one job exactly as ``POST /v1/ingest`` submits it: a collection built
with another embedding model is a 409 first, then the job is stored before the 202 with its
``Location``. What is bounded, and by what:

- files per request: ``max_documents_per_request``, the limit of ``/v1/ingest`` (each file makes
  at least one document); more is a 413 before any file is loaded, as too many documents are;
- bytes per file: the loaders' ``max_file_bytes``, counted while copying (the copy stops at the
  first byte over); such a file fails alone;
- the whole request: ``max_body_bytes``, enforced by the app's ``BodySizeLimit`` while the body
  streams in, before this route runs.

A file that cannot be read fails alone and the others still make the job; when none yields a
document there is no job and the answer is a 422 that lists why each file failed.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.responses import JSONResponse

from ingest.loaders import LoadLimits
from ingest.names import NAME_PATTERN

from ...errors import PayloadTooLarge
from ...uploads import Upload, load_uploads
from ..deps import Ingester, JobsDep, PipelineDep
from ..schemas import UploadOut, UploadRejected

router = APIRouter(prefix="/v1", tags=["documents"])


@router.post(
    "/files",
    status_code=202,
    response_model=UploadOut,
    responses={
        422: {
            "model": UploadRejected,
            "description": "No file produced a document (``files`` says why for each), or the "
            "request is invalid (``errors``).",
        }
    },
)
async def upload_files(
    files: Annotated[
        list[UploadFile],
        File(description="The files, one part each; the supported types are GET /v1/info's."),
    ],
    pipeline: PipelineDep,
    jobs: JobsDep,
    caller: Ingester,
    collection: Annotated[
        str | None,
        Query(pattern=NAME_PATTERN, max_length=64, description="Default: the configured one."),
    ] = None,
) -> Any:
    """Turn uploaded files into documents and queue them as one ingest job: 202 with the job
    (``Location: /v1/jobs/{id}``) and how each file went. Each document's id and source are its
    file's base name (a JSON Lines file keeps its records' ids); a file that fails does so alone.
    """
    settings = pipeline.settings
    limit = settings.max_documents_per_request
    if len(files) > limit:
        raise PayloadTooLarge(
            f"{len(files)} files in one request; the limit is {limit} "
            "(GROUNDED_MAX_DOCUMENTS_PER_REQUEST)"
        )
    target = collection or settings.collection
    # A collection built with another embedding model: 409 now, before any file is parsed.
    await asyncio.to_thread(pipeline.check_writable, target)
    uploads = [Upload(f.filename, f.file) for f in files]
    batch = await asyncio.to_thread(
        load_uploads, uploads, LoadLimits.from_settings(settings), limit
    )
    outcomes = [asdict(outcome) for outcome in batch.files]
    if not batch.documents:
        return JSONResponse({"detail": batch.reasons(), "files": outcomes}, status_code=422)
    job = await asyncio.to_thread(jobs.submit, batch.documents, target, caller.tenant)
    body = UploadOut.model_validate({"job": job.to_dict(), "files": outcomes})
    return JSONResponse(
        body.model_dump(mode="json"), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"}
    )
