"""The FastAPI application: thin routes over one :class:`~service.pipeline.RagPipeline`.

Example::

    app = create_app(RagPipeline.from_settings(Settings()))
    # uvicorn.run(app)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.index import CollectionNotFound, IncompatibleCollection, IndexProblem

from ..pipeline import NotConfigured, RagPipeline
from .routes import chat, collections, documents, search


class BodySizeLimit:
    """Rejects bodies over ``max_bytes`` with 413, by header or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body exceeds the limit of {self.max_bytes} bytes"}, status_code=413
        )
        await response({"type": "http"}, _no_receive, send)


class _TooLarge(Exception):
    pass


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def _error(status: int) -> Callable[[Request, Exception], Any]:
    async def handler(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status)

    return handler


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with one readable reason per problem, plus pydantic's structured errors."""
    reasons = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        reasons.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    errors = [{k: err.get(k) for k in ("loc", "msg", "type")} for err in exc.errors()]
    return JSONResponse({"detail": "; ".join(reasons), "errors": errors}, status_code=422)


def create_app(pipeline: RagPipeline, *, on_ready: Callable[[], None] | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if on_ready:
            on_ready()
        yield
        pipeline.close()

    app = FastAPI(
        title="grounded",
        version="0.1.0",
        description="Answers grounded in your own documents, with citations.",
        lifespan=lifespan,
    )
    app.state.pipeline = pipeline
    app.include_router(search.router)
    app.include_router(documents.router)
    app.include_router(collections.router)
    app.include_router(chat.router)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(CollectionNotFound, _error(404))
    app.add_exception_handler(IncompatibleCollection, _error(409))
    app.add_exception_handler(IndexProblem, _error(400))
    app.add_exception_handler(NotConfigured, _error(422))
    app.add_middleware(BodySizeLimit, max_bytes=pipeline.settings.max_body_bytes)
    return app
