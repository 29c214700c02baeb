"""OpenAI-compatible ``POST /v1/chat/completions`` and ``GET /v1/models``.

An app built on the OpenAI SDK switches to grounded by changing ``base_url``. The last user
message is the question; earlier user/assistant turns go to the LLM as conversation context, and
system messages are added to the grounding rules as the app's instructions. Models are
``grounded`` (the default collection, routed when routes are configured) and
``grounded:<collection>``. grounded's options (``top_k``, ``mode``, ``rerank``, ``hyde``,
``multi_query``, ``filters`` ...) go in the request's extra body. The response carries
``citations`` (and ``grounded``: abstained, degraded, route, timings) as extra fields; a stream
sends them on its last chunk.

Example::

    client = OpenAI(base_url="http://localhost:8000/v1", api_key="unused")
    reply = client.chat.completions.create(model="grounded", messages=[...])
    reply.choices[0].message.content, reply.model_extra["citations"]
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ingest.names import NAME_RULE, InvalidName, is_plain_name

from ...auth import Principal
from ...errors import InvalidRequest
from ...pipeline import QueryResult, RagPipeline, StreamReset
from ...requests import resolve
from ...responses import route_out, sql_out
from ..deps import PipelineDep, Reader
from ..schemas import SearchOptions, SearchRequest
from .search import log, stream_failure

router = APIRouter(prefix="/v1", tags=["openai-compatible"])

MODEL = "grounded"


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(p.text for p in self.content if p.type == "text" and p.text)
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(SearchOptions):
    """OpenAI's request body plus grounded's :class:`SearchOptions` (sent by the OpenAI SDK
    through ``extra_body``); sampling fields it does not use are accepted and ignored."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    model: str = Field(MODEL, max_length=128)
    messages: list[ChatMessage] = Field(min_length=1, max_length=200)
    stream: bool = False
    stream_options: StreamOptions | None = None


def _collection_of(model: str, pipeline: RagPipeline, caller: Principal) -> str | None:
    if model == MODEL:
        return None
    prefix = f"{MODEL}:"
    name = model[len(prefix) :] if model.startswith(prefix) else ""
    if name and not is_plain_name(name):
        raise InvalidName(f"invalid model {MODEL}:<collection>: use {NAME_RULE}")
    if name and pipeline.is_visible(name, caller.visible_tenant):
        return name
    raise HTTPException(
        404, f"model {model!r} does not exist; GET /v1/models lists what grounded serves"
    )


def _split(messages: list[ChatMessage]) -> tuple[str, list[dict[str, str]], str | None]:
    """(question, earlier turns, the app's system instructions)."""
    last = messages[-1]
    if last.role != "user" or not last.text().strip():
        raise InvalidRequest("the last message must be a non-empty user message")
    history = [
        {"role": m.role, "content": m.text()}
        for m in messages[:-1]
        if m.role in ("user", "assistant") and m.text().strip()
    ]
    system = "\n".join(m.text() for m in messages if m.role in ("system", "developer")).strip()
    return last.text().strip(), history, system or None


def _grounded(result: QueryResult) -> dict[str, Any]:
    answer = result.answer
    return {
        "collection": result.params.collection,
        "generator": answer.generator,
        "abstained": answer.abstained,
        "degraded": answer.degraded,
        "degraded_reason": answer.degraded_reason,
        "citations_attributed": answer.citations_attributed,
        "dropped_citations": answer.dropped_citations,
        "route": route_out(result.route),
        "sql": sql_out(result.sql),
        "transforms": result.retrieval.transforms,
        "warnings": result.warnings,
        "timings": result.timings,
    }


def _usage(result: QueryResult) -> dict[str, int]:
    usage = result.answer.usage
    prompt = int(usage.get("prompt_tokens", 0))
    completion = int(usage.get("completion_tokens", 0))
    total = prompt + completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


@router.post("/chat/completions", responses={200: {"content": {"text/event-stream": {}}}})
def chat_completions(
    body: ChatRequest, pipeline: PipelineDep, caller: Reader, request: Request
) -> Any:
    collection = body.collection or _collection_of(body.model, pipeline, caller)
    question, history, system = _split(body.messages)
    wanted = body.model_dump(include=set(SearchOptions.model_fields), exclude={"collection"})
    search = SearchRequest(query=question, collection=collection, **wanted)
    params, options = resolve(search, pipeline, caller.tenant, history=history, instructions=system)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if not body.stream:
        result = pipeline.query(params, options)
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result.answer.text},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": _usage(result),
            "citations": [asdict(c) for c in result.answer.citations],
            "grounded": _grounded(result),
        }
    _, items = pipeline.query_stream(params, options)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(
        _chunks(items, completion_id, created, body.model, include_usage, stream_failure(request)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _chunks(
    items: Iterator[str | StreamReset | QueryResult],
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
    failure: str,
) -> Iterator[str]:
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            **extra,
        }
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    try:
        for item in items:
            if isinstance(item, QueryResult):
                yield chunk(
                    {},
                    "stop",
                    citations=[asdict(c) for c in item.answer.citations],
                    grounded=_grounded(item),
                )
                if include_usage:
                    usage = {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": _usage(item),
                    }
                    yield f"data: {json.dumps(usage)}\n\n"
            elif isinstance(item, StreamReset):
                yield chunk({"content": "\n\n"})  # a chat client cannot unsay text; separate it
            else:
                yield chunk({"content": item})
    except Exception:
        log.exception("chat stream failed: %s", failure)
        error = {"error": {"message": failure, "type": "server_error"}}
        yield f"data: {json.dumps(error)}\n\n"
    yield "data: [DONE]\n\n"


@router.get("/models")
def models(pipeline: PipelineDep, caller: Reader) -> dict[str, Any]:
    """``grounded`` (the default collection or the router) and ``grounded:<collection>`` for
    each collection where the caller has documents."""
    visible = pipeline.visible_collections(caller.visible_tenant)
    names = [MODEL] + [f"{MODEL}:{c}" for c in sorted(visible)]
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "created": 0, "owned_by": "grounded"} for n in names],
    }
