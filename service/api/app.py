"""The FastAPI application: thin routes over one :class:`~service.pipeline.RagPipeline`.

Domain errors are mapped to HTTP statuses here, once: bad names and requests 422, oversize
requests 413, unknown collections, jobs and reports 404, cancelling a finished job 409, missing or
unknown keys 401, missing scopes 403, spent rate limits 429 and a full write or job queue 503
(both with ``Retry-After``).

Example::

    app = create_app(RagPipeline.from_settings(Settings()))
    # uvicorn.run(app)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import redis
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.index import CollectionNotFound, IncompatibleCollection, IndexProblem
from ingest.names import InvalidName
from ingest.settings import Settings

from .. import metrics
from ..auth import (
    Authenticator,
    Forbidden,
    RateLimited,
    Unauthenticated,
    is_loopback,
    open_key_store,
)
from ..errors import InvalidRequest, PayloadTooLarge
from ..jobs import JobFinished, JobNotFound, JobService, JobsUnavailable, build_job_service
from ..pipeline import NotConfigured, RagPipeline
from ..reports import ReportNotFound
from ..write_queue import QueueFull, WriteQueue
from .deps import authorized
from .errors import document_errors, validation_error_handler
from .observability import install_observability
from .routes import chat, collections, documents, files, info, playground, reports, search
from .routes import jobs as job_routes


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
        rejected = False

        # A chunked body is only measured while it is read, inside the app: answer 413 then,
        # tell the app the client left, and drop whatever it tries to send afterwards.
        async def limited() -> Message:
            nonlocal received, rejected
            message = await receive()
            if message["type"] == "http.request" and not rejected:
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    rejected = True
                    await self._reject(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not rejected:
                await send(message)

        try:
            await self.app(scope, limited, guarded_send)
        except Exception:
            if not rejected:
                raise

    async def _reject(self, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body exceeds the limit of {self.max_bytes} bytes"}, status_code=413
        )
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def _error(status: int, **headers: str) -> Callable[[Request, Exception], Any]:
    async def handler(_request: Request, exc: Exception) -> JSONResponse:
        extra = dict(headers)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            extra["Retry-After"] = str(retry_after)
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=extra or None)

    return handler


async def _queue_full(request: Request, exc: Exception) -> JSONResponse:
    metrics.observe_ingest_rejected()
    return await _error(503)(request, exc)


async def _model_error(_request: Request, exc: Exception) -> JSONResponse:
    """A request model built inside a route (chat → search) failed: the client's fault."""
    assert isinstance(exc, ValidationError)  # registered for ValidationError only
    reasons = "; ".join(str(e.get("msg")) for e in exc.errors())
    return JSONResponse({"detail": reasons}, status_code=422)


async def _store_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    """Redis (jobs, keys or rate limits of a fleet) did not answer: try again, not a bug."""
    detail = f"the job and key store is unavailable ({type(exc).__name__}); retry shortly"
    return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "5"})


def package_version() -> str:
    """grounded's installed version: the one pyproject.toml names, reported by the OpenAPI
    schema and ``GET /v1/info`` (a source checkout that was never installed says so)."""
    try:
        return version("grounded")
    except PackageNotFoundError:
        return "0+unknown"


def auth_enabled(settings: Settings) -> bool:
    """``auth = "auto"`` means on exactly when the API binds beyond loopback."""
    if settings.auth == "auto":
        return not is_loopback(settings.host)
    return settings.auth == "on"


def build_authenticator(settings: Settings) -> Authenticator:
    enabled = auth_enabled(settings)
    store = open_key_store(settings.keys_url, settings.keys_path) if enabled else None
    return Authenticator(
        store,
        enabled=enabled,
        default_rate=settings.rate_limit,
        rate_storage=settings.rate_limit_storage,
    )


def create_app(
    pipeline: RagPipeline,
    *,
    authenticator: Authenticator | None = None,
    jobs: JobService | None = None,
    on_ready: Callable[[], None] | None = None,
) -> FastAPI:
    """The app over ``pipeline``; auth follows the settings unless ``authenticator`` is given,
    ingest jobs run as the settings say (:func:`~service.jobs.build_job_service`) unless
    ``jobs`` is given."""
    settings = pipeline.settings
    write_queue = WriteQueue(settings.ingest_queue_size)
    job_service = jobs or build_job_service(settings, pipeline.ingest)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        job_service.start()  # the embedded runner resumes jobs a previous process left
        if on_ready:
            on_ready()
        yield
        job_service.close()
        write_queue.close()
        pipeline.close()

    app = FastAPI(
        title="grounded",
        version=package_version(),
        description="Answers grounded in your own documents, with citations.",
        lifespan=lifespan,
    )
    app.state.pipeline = pipeline
    app.state.write_queue = write_queue
    app.state.jobs = job_service
    app.state.authenticator = authenticator or build_authenticator(settings)
    app.include_router(search.router)
    app.include_router(documents.router)
    app.include_router(job_routes.router)
    app.include_router(collections.router)
    app.include_router(chat.router)
    app.include_router(info.router)
    app.include_router(files.router)
    app.include_router(reports.router)
    app.include_router(playground.router)  # last: the page, after every route it calls
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(ValidationError, _model_error)
    app.add_exception_handler(InvalidName, _error(422))
    app.add_exception_handler(InvalidRequest, _error(422))
    app.add_exception_handler(PayloadTooLarge, _error(413))
    app.add_exception_handler(CollectionNotFound, _error(404))
    app.add_exception_handler(JobNotFound, _error(404))
    app.add_exception_handler(ReportNotFound, _error(404))
    app.add_exception_handler(JobFinished, _error(409))
    app.add_exception_handler(IncompatibleCollection, _error(409))
    app.add_exception_handler(IndexProblem, _error(400))
    app.add_exception_handler(NotConfigured, _error(422))
    app.add_exception_handler(Unauthenticated, _error(401, **{"WWW-Authenticate": "Bearer"}))
    app.add_exception_handler(Forbidden, _error(403))
    app.add_exception_handler(RateLimited, _error(429))
    app.add_exception_handler(QueueFull, _queue_full)
    app.add_exception_handler(JobsUnavailable, _error(503))
    app.add_exception_handler(redis.RedisError, _store_unavailable)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    # Last: the request-id middleware must wrap everything, the body limit included.
    metrics.set_ingest_queue_depth(lambda: write_queue.depth)
    metrics.set_jobs_open(job_service.store.open_count)
    install_observability(app, metrics_dependencies=[Depends(authorized("admin"))])
    document_errors(app)
    return app
