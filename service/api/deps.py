"""Dependencies the routes share: the pipeline and the settings, taken from the app's state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from ingest.settings import Settings

from ..pipeline import RagPipeline
from ..retrieval import SearchParams
from .schemas import SearchRequest, to_field_filters


def get_pipeline(request: Request) -> RagPipeline:
    return request.app.state.pipeline


PipelineDep = Annotated[RagPipeline, Depends(get_pipeline)]


def search_params(body: SearchRequest, settings: Settings) -> SearchParams:
    """Request → :class:`SearchParams`, filling defaults and enforcing the configured limits."""
    top_k = body.top_k or settings.top_k
    if top_k > settings.max_top_k:
        raise HTTPException(422, f"top_k must be between 1 and {settings.max_top_k}, got {top_k}")
    if len(body.query) > settings.max_query_chars:
        raise HTTPException(
            422, f"query is {len(body.query)} characters; the limit is {settings.max_query_chars}"
        )
    try:
        filters = to_field_filters(body.filters)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    configured = settings.reranker != "none"
    if body.rerank and not configured:
        raise HTTPException(422, "rerank requested but no reranker is configured")
    return SearchParams(
        query=body.query,
        collection=body.collection or settings.collection,
        top_k=top_k,
        mode=body.mode or settings.search_mode,
        fusion=body.fusion or settings.fusion,
        filters=filters,
        rrf_k=body.rrf_k,
        dense_weight=body.dense_weight,
        sparse_weight=body.sparse_weight,
        rerank=configured if body.rerank is None else body.rerank,
        multi_query=settings.multi_query if body.multi_query is None else body.multi_query,
        hyde=settings.hyde if body.hyde is None else body.hyde,
    )


def wants_route(body: SearchRequest, settings: Settings) -> bool:
    """Route when asked to, or by default when routes exist and the request names no collection."""
    if body.route is not None:
        return body.route
    return bool(settings.routes) and body.collection is None
