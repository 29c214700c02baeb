"""``POST /v1/search`` (ranked chunks) and ``POST /v1/query`` (chunks plus a cited answer).

``/v1/query`` with ``"stream": true`` answers with Server-Sent Events::

    event: retrieval   data: {collection, mode, results, route, transforms, warnings, timings}
    event: delta       data: {"text": "..."}            (repeated)
    event: reset       data: {"reason": "..."}          (the LLM broke off: drop the deltas so far)
    event: done        data: the full QueryResponse (authoritative answer, citations, usage)
    event: error       data: {"detail": "..."}          (unexpected failure once streaming began)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from ...pipeline import Prepared, QueryResult, StreamReset
from ...retrieval import RetrievalResult, RetrievedChunk, SearchParams
from ...routing import RouteDecision
from ..deps import PipelineDep, search_params, wants_route
from ..schemas import ChunkOut, QueryRequest, QueryResponse, SearchRequest, SearchResponse

router = APIRouter(prefix="/v1", tags=["search"])
log = logging.getLogger("grounded.api")


def route_out(decision: RouteDecision | None) -> dict[str, Any] | None:
    if decision is None:
        return None
    return {
        "name": decision.route.name if decision.route else None,
        "score": decision.score,
        "router": decision.router,
        "scores": decision.scores,
    }


def chunks_out(chunks: list[RetrievedChunk]) -> list[dict[str, Any]]:
    return [ChunkOut(**asdict(c)).model_dump() for c in chunks]


def search_response(
    params: SearchParams,
    result: RetrievalResult,
    decision: RouteDecision | None = None,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "collection": params.collection,
        "mode": params.mode,
        "fusion": params.fusion if params.mode == "hybrid" else None,
        "results": chunks_out(result.chunks),
        "timings": result.timings,
        "route": route_out(decision),
        "transforms": result.transforms,
        "warnings": warnings if warnings is not None else result.warnings,
    }


def query_response(result: QueryResult) -> dict[str, Any]:
    answer = result.answer
    response = search_response(result.params, result.retrieval, result.route, result.warnings)
    response.update(
        timings=result.timings,
        answer=answer.text,
        generator=answer.generator,
        model=answer.model,
        abstained=answer.abstained,
        degraded=answer.degraded,
        degraded_reason=answer.degraded_reason,
        citations=[asdict(c) for c in answer.citations],
        citations_attributed=answer.citations_attributed,
        dropped_citations=answer.dropped_citations,
        context=chunks_out(answer.context),
        usage=answer.usage,
    )
    return response


@router.post("/search", response_model=SearchResponse)
def search(body: SearchRequest, pipeline: PipelineDep) -> dict[str, Any]:
    """Hybrid (or dense / sparse) search; returns ranked chunks and per-stage timings in ms."""
    params = search_params(body, pipeline.settings)
    prep: Prepared = pipeline.prepare(params, route=wants_route(body, pipeline.settings))
    return search_response(prep.params, prep.retrieval, prep.route, prep.warnings)


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _events(
    retrieval: dict[str, Any], items: Iterator[str | StreamReset | QueryResult]
) -> Iterator[str]:
    yield sse("retrieval", SearchResponse(**retrieval).model_dump())
    try:
        for item in items:
            if isinstance(item, QueryResult):
                yield sse("done", QueryResponse(**query_response(item)).model_dump())
            elif isinstance(item, StreamReset):
                yield sse("reset", {"reason": item.reason})
            else:
                yield sse("delta", {"text": item})
    except Exception as exc:  # the status line is sent already; report in-band
        log.exception("stream failed")
        yield sse("error", {"detail": f"{type(exc).__name__}: {exc}"})


@router.post(
    "/query",
    response_model=QueryResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
def query(body: QueryRequest, pipeline: PipelineDep) -> Any:
    """Search, then answer from the results with ``[n]`` citations to them (``stream`` for SSE)."""
    params = search_params(body, pipeline.settings)
    options: dict[str, Any] = {
        "history": [turn.model_dump() for turn in body.history],
        "route": wants_route(body, pipeline.settings),
        "generator": body.generator,
    }
    if not body.stream:
        return query_response(pipeline.query(params, **options))
    prep, items = pipeline.query_stream(params, **options)
    retrieval = search_response(prep.params, prep.retrieval, prep.route, prep.warnings)
    return StreamingResponse(
        _events(retrieval, items), media_type="text/event-stream", headers=_NO_BUFFERING
    )


_NO_BUFFERING = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
