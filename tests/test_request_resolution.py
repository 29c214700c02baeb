"""Request resolution (service/requests.py): one (SearchParams, QueryOptions) pair for search and
ask, judged against the assembled pipeline: ``rerank`` follows ``pipeline.reranker``, not the
``reranker`` setting."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ingest.documents import Document
from ingest.embedding import Embedder
from ingest.index import EdgeIndex
from ingest.settings import Route, Settings
from service.api.app import create_app
from service.api.schemas import QueryRequest, SearchRequest
from service.cli import app as cli_app
from service.errors import InvalidRequest
from service.pipeline import NotConfigured, QueryOptions, RagPipeline
from service.requests import check_limits, resolve
from service.rerank import reorder
from service.retrieval import RetrievedChunk

DOCS = [
    Document("cats", "Cats purr at 25 to 150 Hz.", title="Cats"),
    Document("dogs", "Dogs bark to warn their pack.", title="Dogs"),
    Document("bees", "Bees dance to show where flowers are.", title="Bees"),
]
QUESTION = "why do cats purr?"
NO_RERANKER = "no reranker is configured"


class ReverseReranker:
    """A ready-made reranker that is easy to see at work: it reverses the retrieved order."""

    name = "reverse"

    def __init__(self) -> None:
        self.calls = 0

    def rerank(self, query: str, chunks: list[RetrievedChunk], top_k: int) -> list[RetrievedChunk]:
        self.calls += 1
        return reorder(chunks, [float(c.rank) for c in chunks], top_k)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path / "data", collection="kb")
    assert settings.reranker == "none"  # every pipeline below differs from it by its parts only
    return settings


def _pipeline(
    settings: Settings, embedder: Embedder, reranker: ReverseReranker | None = None
) -> Iterator[RagPipeline]:
    pipeline = RagPipeline(settings, EdgeIndex(settings.data_dir), embedder, reranker=reranker)
    try:
        pipeline.ingest(DOCS, "kb")
        yield pipeline
    finally:
        pipeline.close()


@pytest.fixture
def with_reranker(settings: Settings, embedder: Embedder) -> Iterator[RagPipeline]:
    yield from _pipeline(settings, embedder, ReverseReranker())


@pytest.fixture
def without_reranker(settings: Settings, embedder: Embedder) -> Iterator[RagPipeline]:
    yield from _pipeline(settings, embedder)


def test_a_ready_made_reranker_is_accepted_though_the_setting_says_none(
    with_reranker: RagPipeline,
) -> None:
    asked, _ = resolve(SearchRequest(query=QUESTION, rerank=True), with_reranker)
    by_default, _ = resolve(SearchRequest(query=QUESTION), with_reranker)
    switched_off, _ = resolve(SearchRequest(query=QUESTION, rerank=False), with_reranker)
    assert asked.rerank and by_default.rerank and not switched_off.rerank
    reranker = with_reranker.reranker
    assert isinstance(reranker, ReverseReranker)
    with TestClient(create_app(with_reranker)) as client:
        body = {"query": QUESTION, "top_k": 3}
        reranked = client.post("/v1/search", json={**body, "rerank": True})
        plain = client.post("/v1/search", json={**body, "rerank": False})
        answered = client.post("/v1/query", json={**body, "rerank": True})
        chat = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": QUESTION}], "rerank": True},
        )
    assert [r.status_code for r in (reranked, plain, answered, chat)] == [200] * 4
    assert "rerank_ms" in reranked.json()["timings"] and "rerank_ms" not in plain.json()["timings"]
    ids = [hit["doc_id"] for hit in reranked.json()["results"]]
    assert ids == [hit["doc_id"] for hit in plain.json()["results"]][::-1]
    assert "rerank_ms" in answered.json()["timings"]
    assert "rerank_ms" in chat.json()["grounded"]["timings"]
    assert reranker.calls == 3


def test_without_a_reranker_rerank_is_refused(without_reranker: RagPipeline) -> None:
    with pytest.raises(NotConfigured, match=NO_RERANKER):
        resolve(SearchRequest(query=QUESTION, rerank=True), without_reranker)
    params, _ = resolve(SearchRequest(query=QUESTION), without_reranker)
    assert not params.rerank  # off by default, not refused
    with TestClient(create_app(without_reranker)) as client:
        refused = [
            client.post("/v1/search", json={"query": QUESTION, "rerank": True}),
            client.post("/v1/query", json={"query": QUESTION, "rerank": True}),
            client.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": QUESTION}], "rerank": True},
            ),
        ]
        plain = client.post("/v1/search", json={"query": QUESTION})
    for response in refused:
        assert response.status_code == 422 and NO_RERANKER in response.json()["detail"]
    assert plain.status_code == 200 and "rerank_ms" not in plain.json()["timings"]


def test_the_cli_refuses_rerank_without_a_reranker(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli_app,
        ["search", QUESTION, "--rerank", "--data-dir", str(tmp_path / "data")],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 2 and NO_RERANKER in result.output


def test_search_and_ask_resolve_to_one_option_set(settings: Settings, embedder: Embedder) -> None:
    routed = settings.model_copy(
        update={"routes": [Route(name="pets", description="Cats and dogs")]}
    )
    pipeline = RagPipeline(routed, EdgeIndex(settings.data_dir), embedder)
    try:
        history = ({"role": "user", "content": "hello"},)
        params, options = resolve(
            QueryRequest(query=QUESTION, generator="extractive", history=list(history), top_k=2),
            pipeline,
            tenant="acme",
        )
        assert options == QueryOptions(route=True, generator="extractive", history=history)
        assert (params.top_k, params.collection, params.tenant) == (2, "kb", "acme")
        searched, search_options = resolve(SearchRequest(query=QUESTION, top_k=2), pipeline, "acme")
        assert searched == params and search_options == QueryOptions(route=True)
        # A named collection is not routed by default; the chat endpoint brings its own turns.
        _, chat_options = resolve(
            SearchRequest(query=QUESTION, collection="kb"),
            pipeline,
            history=history,
            instructions="Answer like a vet.",
        )
        assert chat_options == QueryOptions(history=history, instructions="Answer like a vet.")
    finally:
        pipeline.close()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"top_k": 101}, "top_k must be between 1 and 100"),
        ({"query": "x" * 4097}, "the limit is 4096"),
        ({"filters": {"metadata.year": 2.5}}, "needs a string, integer or boolean"),
    ],
)
def test_limits_need_only_the_settings(
    settings: Settings, change: dict[str, Any], message: str
) -> None:
    """What the CLI checks before any model loads; resolve() checks it again."""
    body = SearchRequest(**{"query": QUESTION, **change})
    with pytest.raises(InvalidRequest, match=message):
        check_limits(body, settings)
