"""``GET /v1/collections`` and ``GET /healthz``."""

from __future__ import annotations

from fastapi import APIRouter

from ingest.index import require_manifest

from ..deps import PipelineDep
from ..schemas import CollectionOut

router = APIRouter(tags=["collections"])


@router.get("/v1/collections", response_model=list[CollectionOut])
def collections(pipeline: PipelineDep) -> list[dict[str, object]]:
    out = []
    for name in pipeline.index.list_collections():
        manifest = require_manifest(pipeline.index, name)
        out.append(
            {
                "name": name,
                "points": pipeline.index.count(name),
                "model": manifest.model,
                "dimension": manifest.dimension,
                "chunker": manifest.chunker,
                "bm25": manifest.bm25.as_dict(),
            }
        )
    return out


@router.get("/healthz")
def healthz(pipeline: PipelineDep) -> dict[str, object]:
    return {
        "status": "ok",
        "index": "qdrant-server" if pipeline.settings.uses_server else "qdrant-edge",
        "model": pipeline.embedder.name,
        "collections": pipeline.index.list_collections(),
    }
