"""Pipeline results → the JSON bodies of the REST API, shared with the CLI's ``--json``.

Example::

    body = query_response(pipeline.query(params))
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .api.schemas import ChunkOut
from .jobs.model import Job
from .pipeline import QueryResult
from .retrieval import RetrievalResult, RetrievedChunk, SearchParams
from .routing import RouteDecision
from .sql import SqlCitation


def route_out(decision: RouteDecision | None) -> dict[str, Any] | None:
    if decision is None:
        return None
    return {
        "name": decision.route.name if decision.route else None,
        "score": decision.score,
        "router": decision.router,
        "scores": decision.scores,
    }


def sql_out(citation: SqlCitation | None) -> dict[str, Any] | None:
    """A sql route's citation (the query and its rows), or None for a search answer."""
    return asdict(citation) if citation is not None else None


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
        sql=sql_out(result.sql),
    )
    return response


def report_of(job: Job) -> dict[str, Any]:
    """A finished job in the shape of an ingest report (``POST /v1/ingest?wait=true``)."""
    view = job.to_dict()
    return {
        "job_id": job.id,
        "state": job.state.value,
        "documents": job.added + job.updated + job.unchanged,
        "added": job.added,
        "updated": job.updated,
        "unchanged": job.unchanged,
        "deleted": 0,
        "chunks_written": job.chunks_written,
        "errors": view["errors"],
        "skipped": view["skipped"],
        "seconds": view["timings"]["running_s"],
    }
