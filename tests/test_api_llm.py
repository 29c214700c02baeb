"""The answer API with an LLM: SSE streaming, the OpenAI-compatible chat endpoint (checked with
the official ``openai`` client), degradation without 5xx, and 4xx reasons."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient
from support.fake_llm import FakeLLM
from support.llm_support import llm_pipeline, served
from support.sse import connect_sse

from ingest.embedding import Embedder
from service.api.app import create_app

REPLY = "Cats purr at 25 to 150 Hz [1]."


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with FakeLLM(REPLY) as llm:
        yield llm


@pytest.fixture
def api(tmp_path: Path, embedder: Embedder, fake: FakeLLM) -> Iterator[TestClient]:
    pipeline = llm_pipeline(tmp_path, embedder, fake.url, llm_timeout=0.5, llm_deadline=2.0)
    with TestClient(create_app(pipeline)) as client:
        yield client


@pytest.fixture
def openai_client(tmp_path: Path, embedder: Embedder, fake: FakeLLM) -> Iterator[openai.OpenAI]:
    """The official OpenAI client pointed at grounded, served by uvicorn."""
    pipeline = llm_pipeline(tmp_path, embedder, fake.url)
    with served(create_app(pipeline)) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def events(client: TestClient, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    with connect_sse(client, "POST", "/v1/query", json={**body, "stream": True}) as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        return [(e.event, json.loads(e.data)) for e in source.iter_sse()]


def test_query_answers_with_the_llm_and_resolvable_citations(api: TestClient) -> None:
    response = api.post("/v1/query", json={"query": "how fast do cats purr?", "top_k": 3})
    assert response.status_code == 200
    body = response.json()
    assert body["generator"] == "llm" and body["model"] == "fake-model"
    assert body["answer"] == REPLY and not body["abstained"] and not body["degraded"]
    citation = body["citations"][0]
    assert citation["number"] == 1 and citation["doc_id"] == "cats"
    assert body["context"][0]["id"] == citation["chunk_id"]
    assert body["usage"]["total_tokens"] > 0
    assert {"retrieval_ms", "generate_ms", "total_ms"} <= set(body["timings"])


def test_stream_sends_retrieval_deltas_then_done(api: TestClient) -> None:
    got = events(api, {"query": "how fast do cats purr?", "top_k": 3})
    kinds = [kind for kind, _ in got]
    assert kinds[0] == "retrieval" and kinds[-1] == "done"
    assert set(kinds[1:-1]) == {"delta"} and len(kinds) > 4
    assert got[0][1]["results"][0]["doc_id"] == "cats"
    done = got[-1][1]
    assert "".join(d["text"] for k, d in got if k == "delta") == done["answer"] == REPLY
    assert done["citations"][0]["doc_id"] == "cats"
    assert done["timings"]["first_token_ms"] <= done["timings"]["total_ms"]


def test_stream_that_breaks_resets_and_degrades(api: TestClient, fake: FakeLLM) -> None:
    fake.script("break")
    got = events(api, {"query": "how fast do cats purr?"})
    kinds = [kind for kind, _ in got]
    assert kinds[:3] == ["retrieval", "delta", "delta"]
    assert "reset" in kinds and kinds[-1] == "done"
    done = got[-1][1]
    assert done["degraded"] and done["generator"] == "extractive"
    assert "25 to 150 Hz" in done["answer"]


def test_dead_llm_degrades_without_5xx(api: TestClient, fake: FakeLLM) -> None:
    fake.script(*["500"] * 20)
    response = api.post("/v1/query", json={"query": "how fast do cats purr?"})
    assert response.status_code == 200
    assert response.json()["degraded"] and "HTTP 500" in response.json()["degraded_reason"]
    fake.script(*["garbage"] * 20)
    done = events(api, {"query": "how fast do cats purr?"})[-1][1]
    assert done["degraded"] and done["citations"]


def test_openai_client_calls_chat_completions(openai_client: openai.OpenAI, fake: FakeLLM) -> None:
    client = openai_client
    assert {m.id for m in client.models.list().data} == {"grounded", "grounded:kb"}
    reply = client.chat.completions.create(
        model="grounded",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "tell me about cats"},
            {"role": "assistant", "content": "Cats are mammals."},
            {"role": "user", "content": "how fast do cats purr?"},
        ],
        extra_body={"top_k": 3},
    )
    assert reply.choices[0].message.content == REPLY
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.total_tokens > 0
    extra = reply.model_extra or {}
    assert extra["citations"][0]["doc_id"] == "cats"
    assert extra["grounded"]["generator"] == "llm" and not extra["grounded"]["degraded"]
    sent = fake.requests[-1]["messages"]
    assert "Be brief." in sent[0]["content"]
    assert [m["content"] for m in sent[1:]] == [
        "tell me about cats",
        "Cats are mammals.",
        "how fast do cats purr?",
    ]


def test_openai_client_streams_chat_completions(openai_client: openai.OpenAI) -> None:
    client = openai_client
    stream = client.chat.completions.create(
        model="grounded:kb",
        messages=[{"role": "user", "content": "how fast do cats purr?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason == "stop")
    assert (final.model_extra or {})["citations"][0]["doc_id"] == "cats"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_chat_errors_are_4xx_with_reasons(openai_client: openai.OpenAI) -> None:
    client = openai_client
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(
            model="grounded:nope", messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(openai.UnprocessableEntityError, match="last message"):
        client.chat.completions.create(
            model="grounded", messages=[{"role": "assistant", "content": "hi"}]
        )


def test_query_errors_are_4xx_with_reasons(api: TestClient) -> None:
    r = api.post("/v1/query", json={"query": "x", "stream": True, "route": True})
    assert r.status_code == 422 and "no routes" in r.json()["detail"]
    r = api.post("/v1/query", json={"query": "x", "generator": "poet"})
    assert r.status_code == 422


def test_llm_stages_need_an_llm(tmp_path: Path, embedder: Embedder) -> None:
    pipeline = llm_pipeline(tmp_path, embedder, None)
    with TestClient(create_app(pipeline)) as client:
        body = client.post("/v1/query", json={"query": "how fast do cats purr?"}).json()
        assert body["generator"] == "extractive" and body["citations"]
        for option in ({"hyde": True}, {"multi_query": 2}, {"generator": "llm"}):
            r = client.post("/v1/query", json={"query": "cats", **option})
            assert r.status_code == 422 and "needs an LLM" in r.json()["detail"]


def test_concurrent_queries_all_answer(tmp_path: Path, embedder: Embedder, fake: FakeLLM) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    pipeline = llm_pipeline(tmp_path, embedder, fake.url)
    questions = ["how fast do cats purr?", "what is BM25?", "why does sourdough rise?"] * 4
    with served(create_app(pipeline)) as url, ThreadPoolExecutor(6) as pool:
        responses = list(
            pool.map(
                lambda q: httpx.post(f"{url}/v1/query", json={"query": q}, timeout=60), questions
            )
        )
    assert [r.status_code for r in responses] == [200] * len(questions)
    assert all(r.json()["generator"] == "llm" for r in responses)
