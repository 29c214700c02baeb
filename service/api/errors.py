"""What grounded answers when a request fails, and the OpenAPI schema that says so.

Every error response of the API has one shape, :class:`ErrorBody`::

    {"detail": "top_k: Input should be greater than or equal to 1",
     "errors": [{"loc": ["body", "top_k"], "msg": "...", "type": "greater_than_equal"}],
     "request_id": "..."}

``detail`` is always there and meant for a person; ``errors`` lists each problem of a request
that failed validation (422); ``request_id`` names the request in the server's log where the
server assigned one (always on a 500, whose ``detail`` says nothing about the failure itself).

FastAPI documents its own 422 body (``HTTPValidationError``: ``detail`` is a list) and no other
error. :func:`document_errors` rewrites the app's OpenAPI schema so that it describes the bodies
grounded really sends, which is what clients and the schemathesis run in CI check against.

Example::

    app = FastAPI()
    ...  # include the routers first
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    document_errors(app)
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

__all__ = [
    "ERROR_RESPONSES",
    "ErrorBody",
    "ValidationProblem",
    "document_errors",
    "validation_error_handler",
]


class ValidationProblem(BaseModel):
    """One reason a request failed validation, as pydantic reports it."""

    loc: list[str | int] = Field(
        description="Where: the part of the request, then the path inside it "
        '(``["body", "documents", 0, "id"]``).'
    )
    msg: str = Field(description="What is wrong, for a person.")
    type: str = Field(description="pydantic's error type, for a program.")


class ErrorBody(BaseModel):
    """The body of every 4xx and 5xx response."""

    detail: str = Field(description="What went wrong, for a person.")
    errors: list[ValidationProblem] | None = Field(
        None, description="422 from validation: each problem with the request."
    )
    request_id: str | None = Field(
        None, description="The request's id in the server log; always set on a 500."
    )


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer"},
    }
}

ERROR_RESPONSES: dict[int, str] = {
    400: "The body could not be read (as JSON or multipart), or the index refused the request.",
    401: "No valid API key (only when auth is on).",
    403: "The API key lacks the scope this operation needs.",
    404: "The collection, model, job or report does not exist (for this caller).",
    409: "The collection was built with another embedding model, or the job already finished.",
    413: "The request body, a document, or the number of documents or files is over the limit.",
    422: "The request is invalid; ``errors`` lists each problem when validation found them.",
    429: "Too many requests for this API key; see ``Retry-After``.",
    500: "Unexpected failure; ``detail`` is generic, ``request_id`` finds it in the log.",
    503: "The write queue or the job queue is full; see ``Retry-After``.",
}
"""Each error status grounded sends and what it means; :func:`document_errors` says which
operations can send which."""

# And every DELETE: writes wait in a bounded queue, ingest jobs in a bounded job store.
_WRITE_PATHS = ("/v1/ingest", "/v1/files", "/v1/delete")


def _error_statuses(
    path: str, method: str, operation: dict[str, Any], body: dict[str, Any] | None
) -> set[int]:
    """The error statuses one operation can answer with."""
    statuses = {500}
    if path.startswith("/v1/"):
        statuses |= {401, 403, 429}
    if operation.get("parameters") or "requestBody" in operation:
        statuses.add(422)
    if "requestBody" in operation:
        statuses |= {400, 413}
    properties = (body or {}).get("properties", {})
    parameters = {p.get("name") for p in operation.get("parameters", []) if isinstance(p, dict)}
    if "{collection}" in path or "collection" in properties or "collection" in parameters:
        statuses |= {400, 404, 409}
    if "{report_id}" in path:
        statuses.add(404)
    if "{job_id}" in path:
        statuses.add(404)
        if method == "delete":
            statuses.add(409)
    if path in _WRITE_PATHS or method == "delete":
        statuses.add(503)
    return statuses


def _body_schema(openapi: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON request body's schema with its top-level ``$ref`` resolved, if it has one."""
    content = operation.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    if not isinstance(schema, dict):
        return None
    ref = schema.get("$ref", "")
    prefix = "#/components/schemas/"
    if ref.startswith(prefix):
        return openapi.get("components", {}).get("schemas", {}).get(ref[len(prefix) :])
    return schema


def _response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": ERROR_RESPONSES[status],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    if status in (429, 503):
        response["headers"] = copy.deepcopy(_RETRY_AFTER)
    return response


def _is_referenced(openapi: dict[str, Any], name: str) -> bool:
    return f'"#/components/schemas/{name}"' in json.dumps(openapi)


def _is_fastapi_422(response: dict[str, Any]) -> bool:
    """FastAPI's own 422 (``HTTPValidationError``), not one a route documents itself."""
    return "#/components/schemas/HTTPValidationError" in json.dumps(response)


def _rewrite(openapi: dict[str, Any]) -> None:
    """Describe grounded's error bodies in ``openapi`` (in place)."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in error_schema.pop("$defs", {}).items():
        schemas.setdefault(name, definition)
    schemas.setdefault("ErrorBody", error_schema)
    for path, item in openapi.get("paths", {}).items():
        for method, operation in item.items():
            if method not in ("get", "put", "post", "delete", "patch", "head", "options"):
                continue
            responses = operation.setdefault("responses", {})
            body = _body_schema(openapi, operation)
            statuses = _error_statuses(path, method, operation, body)
            if "422" in responses:  # FastAPI's, also for parameters hidden from the schema
                statuses.add(422)
            for status in sorted(statuses):
                key = str(status)
                # FastAPI's 422 body is not ours; a 422 a route documents (a subclass of
                # ErrorBody, as POST /v1/files does) is kept like any other status it documents.
                if key not in responses or (status == 422 and _is_fastapi_422(responses[key])):
                    responses[key] = _response(status)
    for name in ("HTTPValidationError", "ValidationError"):
        if name in schemas and not _is_referenced(openapi, name):
            del schemas[name]


def document_errors(app: FastAPI) -> None:
    """Make ``app``'s OpenAPI schema describe the errors grounded actually returns.

    Every operation's 422 becomes :class:`ErrorBody` (FastAPI's ``HTTPValidationError`` is
    dropped), and each operation documents the other error statuses it can send, all with
    :class:`ErrorBody`: 500 everywhere; 401, 403 and 429 on ``/v1`` routes; 400 and 413 where
    there is a request body; 422 where there is a body or parameters; 400, 404 and 409 where the
    request names a collection (in the path, the body or the query); 404 where it names a job or
    a report; 503 on writes (``/v1/ingest``, ``/v1/files``, ``/v1/delete`` and every
    ``DELETE``). Responses a route documents itself are kept, apart from FastAPI's 422.

    Call it once, in ``create_app``. The rewrite happens when FastAPI builds the schema (on first
    use), so routers included after the call are covered too.
    """
    generate: Callable[[], dict[str, Any]] = app.openapi
    rewritten: list[dict[str, Any]] = []  # the schema FastAPI cached, once rewritten

    def openapi() -> dict[str, Any]:
        schema = generate()
        if not rewritten or rewritten[0] is not schema:
            _rewrite(schema)
            rewritten[:] = [schema]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """422 as :class:`ErrorBody`: one readable reason per problem in ``detail``, pydantic's
    ``loc``/``msg``/``type`` of each in ``errors`` (never the rejected input itself).

    Typed for ``Exception`` as Starlette's ``add_exception_handler`` wants; register it for
    :class:`RequestValidationError`."""
    assert isinstance(exc, RequestValidationError)
    problems = exc.errors()
    reasons = []
    errors = []
    for err in problems:
        loc = [p if isinstance(p, int) else str(p) for p in err.get("loc", ())]
        msg = str(err.get("msg", "invalid"))
        where = ".".join(str(p) for p in loc if p != "body")
        reasons.append(f"{where}: {msg}" if where else msg)
        errors.append({"loc": loc, "msg": msg, "type": str(err.get("type", "value_error"))})
    content: dict[str, Any] = {
        "detail": "; ".join(reasons) or "invalid request",
        "errors": errors,
    }
    request_id = getattr(request.state, "request_id", None)
    if request_id is not None:
        content["request_id"] = str(request_id)
    return JSONResponse(content, status_code=422)
