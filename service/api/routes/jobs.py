"""``GET /v1/jobs``, ``GET /v1/jobs/{id}``, ``DELETE /v1/jobs/{id}``: ingest jobs of the caller's
tenant (an admin key sees every tenant's)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from ..deps import Ingester, JobsDep
from ..schemas import JobOut

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="The id a 202 returned.")]


@router.get("", response_model=list[JobOut])
async def recent_jobs(
    jobs: JobsDep,
    caller: Ingester,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[dict[str, Any]]:
    """Recent ingest jobs, newest first."""
    found = await asyncio.to_thread(jobs.recent, caller.visible_tenant, limit)
    return [job.to_dict() for job in found]


@router.get("/{job_id}", response_model=JobOut)
async def job(job_id: JobId, jobs: JobsDep, caller: Ingester) -> dict[str, Any]:
    """State, progress, per-document errors and timings of one job."""
    return (await asyncio.to_thread(jobs.get, job_id, caller.visible_tenant)).to_dict()


@router.delete("/{job_id}", response_model=JobOut)
async def cancel_job(job_id: JobId, jobs: JobsDep, caller: Ingester) -> dict[str, Any]:
    """Cancel: queued batches are dropped, a batch already running finishes; 409 when the job
    finished already."""
    return (await asyncio.to_thread(jobs.cancel, job_id, caller.visible_tenant)).to_dict()
