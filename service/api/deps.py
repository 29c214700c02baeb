"""Dependencies the routes share: the pipeline, and who is calling (auth, scope, rate limit)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Header, Request

from ..auth import Authenticator, Principal
from ..jobs import JobService
from ..pipeline import RagPipeline
from ..write_queue import WriteQueue


def get_pipeline(request: Request) -> RagPipeline:
    return request.app.state.pipeline


def get_write_queue(request: Request) -> WriteQueue:
    return request.app.state.write_queue


def get_jobs(request: Request) -> JobService:
    return request.app.state.jobs


PipelineDep = Annotated[RagPipeline, Depends(get_pipeline)]
JobsDep = Annotated[JobService, Depends(get_jobs)]
WriteQueueDep = Annotated[WriteQueue, Depends(get_write_queue)]


def authorized(*scopes: str) -> Callable[..., Principal]:
    """A dependency: the caller's :class:`Principal`, refused unless it holds one of
    ``scopes`` (``admin`` holds them all)."""

    def dependency(
        request: Request,
        authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
        x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> Principal:
        auth: Authenticator = request.app.state.authenticator
        principal = auth.authenticate(authorization, x_api_key)
        request.state.tenant = principal.tenant
        request.state.key_prefix = principal.key_prefix
        auth.authorize(principal, scopes, f"{request.method} {request.url.path}")
        return principal

    return dependency


Reader = Annotated[Principal, Depends(authorized("read"))]
Ingester = Annotated[Principal, Depends(authorized("ingest"))]
Admin = Annotated[Principal, Depends(authorized("admin"))]
SourceReader = Annotated[Principal, Depends(authorized("read", "ingest"))]
