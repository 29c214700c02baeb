"""Writes through the running service: the way to ingest while it owns an embedded shard."""

from __future__ import annotations

from fastapi import APIRouter

from ingest.documents import Document

from ..deps import PipelineDep
from ..schemas import DeleteRequest, IngestRequest

router = APIRouter(prefix="/v1", tags=["documents"])


@router.post("/ingest")
def ingest(body: IngestRequest, pipeline: PipelineDep) -> dict[str, object]:
    """Chunk, embed and upsert documents; unchanged ones are skipped, changed ones replaced."""
    docs = [Document(d.id, d.text, d.title, d.source, d.metadata) for d in body.documents]
    report = pipeline.ingest(docs, body.collection or pipeline.settings.collection)
    return report.to_dict()


@router.post("/delete")
def delete(body: DeleteRequest, pipeline: PipelineDep) -> dict[str, int]:
    """Remove documents (all their chunks) by id."""
    return {
        "deleted": pipeline.delete(body.doc_ids, body.collection or pipeline.settings.collection)
    }


@router.get("/collections/{collection}/sources")
def sources(collection: str, pipeline: PipelineDep) -> dict[str, str]:
    """``doc_id -> source`` for every document: what ``grounded ingest --prune`` compares with."""
    pipeline.index.count(collection)  # 404 for an unknown collection
    return pipeline.document_sources(collection)
