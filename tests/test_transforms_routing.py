"""Reranking by LLM, multi-query expansion, HyDE and routing: each changes what is retrieved,
shows its cost in the timings, can be switched off, and falls back when the LLM fails."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.fake_llm import FakeLLM, prompt_text
from support.llm_support import llm_pipeline

from ingest.embedding import Embedder
from ingest.settings import Route
from service.api.app import create_app
from service.pipeline import QueryOptions
from service.rerank import parse_ranking
from service.retrieval import SearchParams
from service.routing import NO_MATCHING_SOURCE, parse_route_reply
from service.transforms import parse_queries

ROUTES = [
    Route(
        name="pets",
        description="Questions about cats, dogs and other pets",
        collection="kb",
        prompt="Answer as a veterinarian.",
        examples=["why does my cat purr?"],
    ),
    Route(
        name="search-engines",
        description="Questions about search engines, ranking and vector databases",
        collection="kb",
        examples=["how does BM25 rank documents?"],
    ),
]


def ids(chunks: Any) -> list[str]:
    return [c.doc_id for c in chunks]


def test_parsers_are_lenient() -> None:
    reply = '1. "purring felines"\n2) cat purr frequency\n- Why do cats purr?\nHere:\n\n'
    assert parse_queries(reply, "why do cats purr?", 5) == ["purring felines", "cat purr frequency"]
    assert parse_ranking("[3] > [1] > [3] > [9]", 4) == [2, 0, 1, 3]
    assert parse_ranking("no idea", 3) == [0, 1, 2]
    names = ["pets", "search-engines"]
    assert parse_route_reply('{"route": "Pets", "confidence": 0.8}', names) == ("pets", 0.8)
    assert parse_route_reply("I would pick search-engines.", names) == ("search-engines", 1.0)
    assert parse_route_reply('{"route": "none", "confidence": 0.9}', names) == (None, 0.9)
    assert parse_route_reply("pets or search-engines", names) == (None, 0.0)


def test_multi_query_fuses_rephrasings(tmp_path: Path, embedder: Embedder) -> None:
    def reply(body: dict[str, Any]) -> str:
        assert "Write 2 different search queries" in prompt_text(body)
        return "term frequency document ranking\ninverse document frequency scoring"

    with FakeLLM(reply) as llm:
        pipeline = llm_pipeline(tmp_path, embedder, llm.url)
        try:
            plain = pipeline.search(SearchParams("purring cats", collection="kb", top_k=2))
            expanded = pipeline.search(
                SearchParams("purring cats", collection="kb", top_k=2, multi_query=2)
            )
            llm.script("500", "500", "500", "500")
            failed = pipeline.search(
                SearchParams("purring cats", collection="kb", top_k=2, multi_query=2)
            )
        finally:
            pipeline.close()
    assert ids(plain.chunks)[0] == "cats" and "expand_ms" not in plain.timings
    assert "bm25" in ids(expanded.chunks) and "bm25" not in ids(plain.chunks)
    assert expanded.transforms["queries"] == [
        "term frequency document ranking",
        "inverse document frequency scoring",
    ]
    assert expanded.timings["expand_ms"] > 0 and expanded.timings["multi_query_search_ms"] > 0
    assert ids(failed.chunks) == ids(plain.chunks)
    assert failed.warnings and "multi-query skipped" in failed.warnings[0]


def test_hyde_drives_the_dense_leg_only(tmp_path: Path, embedder: Embedder) -> None:
    passage = (
        "Wild yeast and lactic acid bacteria ferment sourdough over many hours, "
        "which makes the bread rise."
    )
    with FakeLLM(passage) as llm:
        pipeline = llm_pipeline(tmp_path, embedder, llm.url)
        try:
            question = "what do microbes do in the kitchen?"
            dense = pipeline.search(SearchParams(question, collection="kb", mode="dense"))
            hyde = pipeline.search(SearchParams(question, collection="kb", mode="dense", hyde=True))
            sparse = pipeline.search(SearchParams("bread", collection="kb", mode="sparse"))
            sparse_hyde = pipeline.search(
                SearchParams("bread", collection="kb", mode="sparse", hyde=True)
            )
        finally:
            pipeline.close()
    assert ids(hyde.chunks)[0] == "bread"
    assert ids(hyde.chunks) != ids(dense.chunks)
    assert hyde.transforms["hyde_passage"] == passage and hyde.timings["hyde_ms"] > 0
    assert ids(sparse_hyde.chunks) == ids(sparse.chunks)  # BM25 keeps the question's words
    assert "Write a short passage" in prompt_text(llm.requests[0])


def test_llm_reranker_reorders_candidates(tmp_path: Path, embedder: Embedder) -> None:
    def reply(body: dict[str, Any]) -> str:
        text = prompt_text(body)
        assert text.startswith("Rank the 5 passages")
        passages = re.findall(r"^\[(\d+)\] (.*)$", text, re.MULTILINE)
        bread = next(n for n, p in passages if "Sourdough" in p)
        return " > ".join(f"[{n}]" for n in [bread] + [n for n, _ in passages if n != bread])

    with FakeLLM(reply) as llm:
        pipeline = llm_pipeline(
            tmp_path, embedder, llm.url, reranker="llm", rerank_candidates=5, top_k=3
        )
        try:
            plain = pipeline.search(SearchParams("cats purr", collection="kb", top_k=3))
            reranked = pipeline.search(
                SearchParams("cats purr", collection="kb", top_k=3, rerank=True)
            )
            llm.script(*["500"] * 10)
            failed = pipeline.search(
                SearchParams("cats purr", collection="kb", top_k=3, rerank=True)
            )
        finally:
            pipeline.close()
    assert ids(plain.chunks)[0] == "cats" and "rerank_ms" not in plain.timings
    assert ids(reranked.chunks)[0] == "bread" and len(reranked.chunks) == 3
    assert [c.rank for c in reranked.chunks] == [1, 2, 3]
    assert reranked.timings["rerank_ms"] > 0
    assert ids(failed.chunks) == ids(plain.chunks)
    assert "reranking skipped" in failed.warnings[0]


def test_embedding_router_routes_or_says_no_matching_source(
    tmp_path: Path, embedder: Embedder
) -> None:
    with FakeLLM("Cats purr when content [1].") as llm:
        pipeline = llm_pipeline(tmp_path, embedder, llm.url, routes=ROUTES)
        with TestClient(create_app(pipeline)) as client:
            routed = client.post("/v1/query", json={"query": "why do cats purr?"}).json()
            assert routed["route"]["name"] == "pets" and routed["route"]["router"] == "embedding"
            assert routed["route"]["score"] >= 0.3 and routed["timings"]["route_ms"] > 0
            assert routed["citations"] and routed["collection"] == "kb"
            assert "Answer as a veterinarian." in llm.requests[-1]["messages"][0]["content"]

            other = client.post("/v1/search", json={"query": "how does BM25 rank documents?"})
            assert other.json()["route"]["name"] == "search-engines"

            calls = len(llm.requests)
            nowhere = client.post(
                "/v1/query", json={"query": "best hiking trails in the Alps in winter"}
            ).json()
            assert nowhere["route"]["name"] is None and nowhere["route"]["score"] < 0.3
            assert nowhere["answer"] == NO_MATCHING_SOURCE and nowhere["abstained"]
            assert nowhere["results"] == [] and len(llm.requests) == calls

            off = client.post(
                "/v1/query", json={"query": "best hiking trails", "collection": "kb"}
            ).json()
            assert off["route"] is None and off["results"]


def test_llm_router_and_its_fallback(tmp_path: Path, embedder: Embedder) -> None:
    def reply(body: dict[str, Any]) -> str:
        if "Choose the source" in prompt_text(body):
            return '{"route": "search-engines", "confidence": 0.9}'
        return "BM25 ranks by term frequency [1]."

    with FakeLLM(reply) as llm:
        pipeline = llm_pipeline(tmp_path, embedder, llm.url, routes=ROUTES, router="llm")
        try:
            result = pipeline.query(
                SearchParams("how is text scored?", collection="kb"), QueryOptions(route=True)
            )
            assert result.route is not None and result.route.router == "llm"
            assert result.route.route is not None and result.route.route.name == "search-engines"
            assert result.route.score == pytest.approx(0.9)
            llm.script(*["500"] * 4)
            fallback = pipeline.query(
                SearchParams("why do cats purr?", collection="kb"), QueryOptions(route=True)
            )
            assert fallback.route is not None and fallback.route.router == "embedding"
            assert fallback.route.route is not None and fallback.route.route.name == "pets"
            assert "LLM router failed" in fallback.warnings[0]
        finally:
            pipeline.close()
