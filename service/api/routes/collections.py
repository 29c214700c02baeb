"""``GET /v1/collections``, ``DELETE /v1/collections/{name}``, ``/healthz`` and ``/readyz``."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ingest.index import require_manifest

from ..deps import Admin, PipelineDep, Reader, WriteQueueDep
from ..schemas import CollectionOut
from .documents import CollectionPath

router = APIRouter(tags=["collections"])

READY_TIMEOUT_S = 2.0


@router.get("/v1/collections", response_model=list[CollectionOut])
def collections(pipeline: PipelineDep, caller: Reader) -> list[dict[str, object]]:
    """Collections where the caller has documents, with its point count in each (an admin key
    sees every collection)."""
    out = []
    for name in pipeline.visible_collections(caller.visible_tenant):
        manifest = require_manifest(pipeline.index, name)
        out.append(
            {
                "name": name,
                "points": pipeline.index.count(name, caller.tenant),
                "model": manifest.model,
                "dimension": manifest.dimension,
                "chunker": manifest.chunker,
                "bm25": manifest.bm25.as_dict(),
            }
        )
    return out


@router.delete("/v1/collections/{collection}")
async def drop_collection(
    collection: CollectionPath, pipeline: PipelineDep, queue: WriteQueueDep, _caller: Admin
) -> dict[str, str]:
    """Remove a collection with every tenant's documents (``admin`` scope)."""
    await asyncio.wrap_future(queue.submit(lambda: pipeline.drop_collection(collection)))
    return {"dropped": collection}


@router.get("/healthz")
async def healthz(pipeline: PipelineDep) -> dict[str, object]:
    """Liveness: the process answers. Runs on the event loop, so no load can queue it."""
    return {
        "status": "ok",
        "index": "qdrant-server" if pipeline.settings.uses_server else "qdrant-edge",
        "model": pipeline.embedder.name,
    }


@router.get("/readyz", responses={503: {"description": "Not ready: the index cannot be read."}})
async def readyz(pipeline: PipelineDep) -> Any:
    """Readiness: the model is loaded and the index answers within 2 s."""
    checks: dict[str, str] = {"model": "ok" if pipeline.embedder.dimension > 0 else "not loaded"}
    try:
        await asyncio.wait_for(asyncio.to_thread(pipeline.index.list_collections), READY_TIMEOUT_S)
        checks["index"] = "ok"
    except TimeoutError:
        checks["index"] = f"no answer within {READY_TIMEOUT_S:g} s"
    except Exception as exc:  # any failure means "not ready"; the reason goes to the operator
        checks["index"] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    body = {"status": "ready" if ready else "not ready", "checks": checks}
    return body if ready else JSONResponse(body, status_code=503)
