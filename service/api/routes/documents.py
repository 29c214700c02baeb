"""Writes through the running service: the way to ingest while it owns an embedded shard.

Writes wait in the app's bounded :class:`~service.write_queue.WriteQueue`, never on the thread
pool that searches and health checks use; a full queue answers 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path

from ingest.names import NAME_PATTERN

from ...requests import ingest_documents
from ..deps import Ingester, PipelineDep, SourceReader, WriteQueueDep
from ..schemas import DeleteRequest, IngestRequest

router = APIRouter(prefix="/v1", tags=["documents"])

CollectionPath = Annotated[str, Path(pattern=NAME_PATTERN, max_length=64)]


@router.post("/ingest")
async def ingest(
    body: IngestRequest, pipeline: PipelineDep, queue: WriteQueueDep, caller: Ingester
) -> dict[str, object]:
    """Chunk, embed and upsert documents; unchanged ones are skipped, changed ones replaced,
    empty ones reported under ``skipped``."""
    docs = ingest_documents(body, pipeline.settings)
    collection = body.collection or pipeline.settings.collection
    job = queue.submit(lambda: pipeline.ingest(docs, collection, tenant=caller.tenant))
    report = await asyncio.wrap_future(job)
    return report.to_dict()


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
