"""``POST /v1/search`` (ranked chunks) and ``POST /v1/query`` (chunks plus a cited answer)."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from ...retrieval import RetrievalResult, SearchParams
from ..deps import PipelineDep, search_params
from ..schemas import ChunkOut, QueryRequest, QueryResponse, SearchRequest, SearchResponse

router = APIRouter(prefix="/v1", tags=["search"])


def search_response(params: SearchParams, result: RetrievalResult) -> dict[str, object]:
    return {
        "collection": params.collection,
        "mode": params.mode,
        "fusion": params.fusion if params.mode == "hybrid" else None,
        "results": [ChunkOut(**asdict(c)) for c in result.chunks],
        "timings": result.timings,
    }


@router.post("/search", response_model=SearchResponse)
def search(body: SearchRequest, pipeline: PipelineDep) -> dict[str, object]:
    """Hybrid (or dense / sparse) search; returns ranked chunks and per-stage timings in ms."""
    params = search_params(body, pipeline.settings)
    return search_response(params, pipeline.search(params))


@router.post("/query", response_model=QueryResponse)
def query(body: QueryRequest, pipeline: PipelineDep) -> dict[str, object]:
    """Search, then answer from the results with ``[n]`` citations to them."""
    params = search_params(body, pipeline.settings)
    result = pipeline.query(params)
    response = search_response(params, result.retrieval)
    response["timings"] = result.timings
    response.update(
        answer=result.answer.text,
        generator=result.answer.generator,
        abstained=result.answer.abstained,
        citations=[asdict(c) for c in result.answer.citations],
    )
    return response
