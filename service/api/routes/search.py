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
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from ... import metrics
from ...pipeline import Prepared, QueryResult, StreamReset
from ...requests import resolve
from ...responses import query_response, search_response
from ..deps import PipelineDep, Reader
from ..observability import request_id
from ..schemas import QueryRequest, QueryResponse, SearchRequest, SearchResponse

router = APIRouter(prefix="/v1", tags=["search"])
log = logging.getLogger("grounded.api")


@router.post("/search", response_model=SearchResponse)
def search(body: SearchRequest, pipeline: PipelineDep, caller: Reader) -> dict[str, Any]:
    """Hybrid (or dense / sparse) search; returns ranked chunks and per-stage timings in ms."""
    params, options = resolve(body, pipeline, caller.tenant)
    prep: Prepared = pipeline.prepare(params, options)
    metrics.observe_timings(prep.retrieval.timings)
    return search_response(prep.params, prep.retrieval, prep.route, prep.warnings)


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def stream_failure(request: Request) -> str:
    """The in-band error text of a stream that failed after its status line: generic, with the
    request id that the log line of the failure carries."""
    return f"internal server error (request id {request_id(request)})"


def _events(
    retrieval: dict[str, Any], items: Iterator[str | StreamReset | QueryResult], failure: str
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
    except Exception:  # the status line is sent already; report in-band
        log.exception("stream failed: %s", failure)
        yield sse("error", {"detail": failure})


@router.post(
    "/query",
    response_model=QueryResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
def query(body: QueryRequest, pipeline: PipelineDep, caller: Reader, request: Request) -> Any:
    """Search, then answer from the results with ``[n]`` citations to them (``stream`` for SSE)."""
    params, options = resolve(body, pipeline, caller.tenant)
    if not body.stream:
        return query_response(pipeline.query(params, options))
    prep, items = pipeline.query_stream(params, options)
    retrieval = search_response(prep.params, prep.retrieval, prep.route, prep.warnings)
    return StreamingResponse(
        _events(retrieval, items, stream_failure(request)),
        media_type="text/event-stream",
        headers=_NO_BUFFERING,
    )


_NO_BUFFERING = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
