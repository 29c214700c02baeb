"""Request ids, one JSON access-log line per request, generic 500s, and Prometheus ``/metrics``.

Every request gets an id: the caller's ``X-Request-ID`` when it is a short, safe token, else a
fresh one. The id comes back as the ``X-Request-ID`` response header, sits in
``request.state.request_id``, is on every JSON log line written while the request runs, and is
the only thing a 500 body says besides "internal server error", so a user's report leads to the
traceback without the response ever showing exception text.

Example::

    app = FastAPI()
    ...  # routes, exception handlers, other middleware
    install_observability(app, metrics_dependencies=[Depends(require_admin)])  # last
    configure_logging("INFO")  # in `grounded serve`, before uvicorn.run
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator import metrics as http_metrics
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
METRICS_PATH = "/metrics"

access_log = logging.getLogger("grounded.access")
error_log = logging.getLogger("grounded.api")

# An inbound id is echoed into headers and logs, so only a short token of safe characters is
# trusted; anything else (newlines, quotes, 200 characters) is replaced, never cleaned up.
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_current_id: ContextVar[str | None] = ContextVar("grounded_request_id", default=None)

# Requests run from milliseconds (health checks) to the LLM deadline (a minute).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_HANDLER_NAME = "grounded-json"


# Request ids -------------------------------------------------------------------------------


def _inbound_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers") or ():
        if name.lower() == b"x-request-id":
            text = value.decode("latin-1")
            return text if _SAFE_ID.fullmatch(text) else None
    return None


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id(request: Request) -> str:
    """The id of ``request`` (set by the middleware; made here if a request got past it), for
    in-band errors of a stream whose status line is already sent."""
    rid = getattr(request.state, "request_id", None)
    if not isinstance(rid, str):
        rid = new_request_id()
        request.state.request_id = rid
    return rid


def current_request_id() -> str | None:
    """The id of the request this code runs for, or ``None`` outside a request. Set per
    request, copied into the thread pool that runs sync routes and streams."""
    return _current_id.get()


def _stamp_request_ids() -> None:
    """Stamp each log record with the current request id when it is created, so the id is
    right even where a record is formatted later or elsewhere (a queue handler, pytest's
    caplog). Idempotent; wraps whatever record factory is installed."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_grounded_request_id", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        # Not "request_id": `extra={"request_id": ...}` would then clash with the attribute.
        record.grounded_request_id = _current_id.get()
        return record

    factory._grounded_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def _route_template(scope: Scope) -> str | None:
    """The matched route's template (``/v1/collections/{collection}/sources``), or ``None``
    when no route matched: a raw path would put any string a client sends into the logs."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


# JSON logging --------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the record's ``fields`` (passed
    as ``extra={"fields": {...}}``), the current request id, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if "request_id" not in line:
            rid = getattr(record, "grounded_request_id", None) or current_request_id()
            if rid is not None:
                line["request_id"] = rid
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        # json.dumps escapes newlines, so a traceback or a hostile string stays on one line.
        return json.dumps(line, default=str)


def configure_logging(level: int | str = "INFO") -> None:
    """Send the ``grounded.*`` loggers (``grounded.access``, ``grounded.api``) to stderr as
    JSON lines. Idempotent: a second call replaces the handler, never adds another."""
    _stamp_request_ids()
    logger = logging.getLogger("grounded")
    for handler in list(logger.handlers):
        if handler.get_name() == _HANDLER_NAME:
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level.upper() if isinstance(level, str) else level)
    # The root logger may have its own (plain-text) handler; one line per record is enough.
    logger.propagate = False


# Middleware --------------------------------------------------------------------------------


class RequestContext:
    """Pure ASGI (``BaseHTTPMiddleware`` would buffer streams): gives each request its id, adds
    ``X-Request-ID`` to the response and writes the access-log line when the request ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _inbound_id(scope) or new_request_id()
        # The server's per-request state dict is shared by every Request built on this scope,
        # including the one ServerErrorMiddleware builds outside us for the 500 handler.
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = rid
        token = _current_id.set(rid)
        started = time.perf_counter()
        status: int | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = rid
            await send(message)

        error: str | None = None
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Re-raised for ServerErrorMiddleware, which answers with the 500 handler's body.
            error = type(exc).__name__
            raise
        finally:
            _current_id.reset(token)
            if status is None and error is not None:
                status = 500
            _log_access(scope, state, rid, status, started, error)


def _log_access(
    scope: Scope,
    state: dict[str, Any],
    rid: str,
    status: int | None,
    started: float,
    error: str | None,
) -> None:
    fields: dict[str, Any] = {
        "request_id": rid,
        "method": scope.get("method"),
        "route": _route_template(scope),
        "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    # Set by the auth dependency; the key prefix identifies a key without revealing it.
    if state.get("key_prefix") is not None:
        fields["key"] = state["key_prefix"]
    if state.get("tenant") is not None:
        fields["tenant"] = state["tenant"]
    if error is not None:
        fields["error"] = error  # the type only: the message may quote documents or secrets
    access_log.info("request", extra={"fields": fields})


# Unhandled exceptions --------------------------------------------------------------------


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    """The ``Exception`` handler, which Starlette runs in ServerErrorMiddleware, outside every
    user middleware: it logs the traceback under the request id and answers a generic 500 that
    carries the id in body and header (our middleware's send wrapper is not on this path)."""
    rid = request_id(request)
    error_log.error(
        "unhandled exception",
        exc_info=(type(exc), exc, exc.__traceback__),
        extra={
            "fields": {
                "request_id": rid,
                "method": request.method,
                "route": _route_template(request.scope),
            }
        },
    )
    return JSONResponse(
        {"detail": "internal server error", "request_id": rid},
        status_code=500,
        headers={REQUEST_ID_HEADER: rid},
    )


# Metrics -----------------------------------------------------------------------------------


@functools.cache
def _http_instrumentations() -> tuple[Callable[[http_metrics.Info], None], ...]:
    """Request count and latency by route template, method and status, made once per process:
    the instrumentator's factories return ``None`` when the metric is already registered, so a
    second app (tests, a reload) would otherwise record nothing."""
    made = (
        http_metrics.requests(),
        http_metrics.latency(buckets=_LATENCY_BUCKETS),
    )
    return tuple(m for m in made if m is not None)


def _install_metrics(app: FastAPI, dependencies: Sequence[Any]) -> None:
    instrumentator = Instrumentator(
        should_group_status_codes=False,  # 401, 404, 429 and 503 mean different things
        should_group_untemplated=True,  # unmatched paths count as handler "none"
        excluded_handlers=[f"^{re.escape(METRICS_PATH)}$"],
    )
    instrumentator.add(*_http_instrumentations())
    instrumentator.instrument(app)
    instrumentator.expose(
        app, endpoint=METRICS_PATH, include_in_schema=False, dependencies=list(dependencies)
    )


def install_observability(app: FastAPI, *, metrics_dependencies: Sequence[Any] = ()) -> None:
    """Request ids, access log, generic 500s and ``/metrics`` (guarded by
    ``metrics_dependencies``, e.g. ``[Depends(require_admin)]``).

    Call it after every other ``add_middleware``: middleware added later wraps earlier ones, and
    the request-id middleware must be outermost to stamp every response, 413s and 401s included.
    """
    _stamp_request_ids()
    _install_metrics(app, metrics_dependencies)
    app.add_middleware(RequestContext)
    app.add_exception_handler(Exception, internal_error)
