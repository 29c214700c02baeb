"""The real FastAPI app over a real Edge shard and the real model, through HTTP (TestClient)."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ingest.documents import Document
from ingest.embedding import SentenceTransformerEmbedder
from ingest.index import EdgeIndex
from ingest.settings import Settings
from service.api.app import create_app
from service.pipeline import RagPipeline

DOCS = [
    {
        "id": "bees",
        "title": "Honey bees",
        "text": "Honey bees pollinate crops. Foragers share food locations with the waggle dance.",
        "metadata": {"year": 2020, "topic": "biology"},
    },
    {
        "id": "rome",
        "title": "Aqueducts",
        "text": "Roman aqueducts carried water into cities by gravity over stone arches.",
        "metadata": {"year": 2015, "topic": "history"},
    },
    {
        "id": "holes",
        "title": "Black holes",
        "text": "Nothing escapes a black hole, not even light. Its boundary is the event horizon.",
        "metadata": {"year": 2023, "topic": "physics"},
    },
]


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder
) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("api"),
        collection="kb",
        max_top_k=20,
        max_body_bytes=200_000,
    )
    pipeline = RagPipeline.from_settings(
        settings, index=EdgeIndex(settings.data_dir), embedder=embedder
    )
    with TestClient(create_app(pipeline)) as test_client:
        response = test_client.post("/v1/ingest?wait=true", json={"documents": DOCS})
        assert response.status_code == 200, response.text
        assert response.json()["added"] == 3
        yield test_client


@pytest.mark.parametrize(
    "body",
    [
        {"mode": "hybrid"},
        {"mode": "hybrid", "fusion": "dbsf"},
        {"mode": "dense"},
        {"mode": "sparse"},
        {"mode": "hybrid", "fusion": "rrf", "rrf_k": 10, "dense_weight": 2.0, "sparse_weight": 0.5},
    ],
)
def test_search_modes(client: TestClient, body: dict) -> None:
    response = client.post("/v1/search", json={"query": "waggle dance of bees", "top_k": 2, **body})
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["results"][0]["doc_id"] == "bees"
    assert data["results"][0]["rank"] == 1 and data["results"][0]["title"] == "Honey bees"
    assert data["mode"] == body["mode"]
    timings = data["timings"]
    assert 0 < timings["search_ms"] <= timings["retrieval_ms"]  # the search is part of retrieval
    assert len(data["results"]) <= 2


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"dense_weight": 2.0}, "dense_weight tune RRF fusion, but this search fuses with dbsf"),
        ({"fusion": "dbsf", "rrf_k": 10, "sparse_weight": 0.5}, "rrf_k, sparse_weight tune RRF"),
    ],
)
def test_rrf_knobs_under_dbsf_are_refused_not_ignored(
    client: TestClient, body: dict, words: str
) -> None:
    response = client.post("/v1/search", json={"query": "waggle dance of bees", **body})
    assert response.status_code == 422, response.text
    assert words in response.text and '\\"fusion\\": \\"rrf\\"' in response.text


def test_search_filters(client: TestClient) -> None:
    def ids(filters: dict) -> set[str]:
        r = client.post("/v1/search", json={"query": "science", "filters": filters})
        assert r.status_code == 200, r.text
        return {x["doc_id"] for x in r.json()["results"]}

    assert ids({"metadata.topic": "history"}) == {"rome"}
    assert ids({"doc_id": {"any": ["bees", "holes"]}}) == {"bees", "holes"}
    assert ids({"metadata.year": {"gte": 2016, "lte": 2022}}) == {"bees"}


def test_query_gives_extractive_answer_with_citations(client: TestClient) -> None:
    response = client.post(
        "/v1/query", json={"query": "What is the boundary of a black hole?", "top_k": 3}
    )
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["generator"] == "extractive" and not data["abstained"]
    assert "event horizon" in data["answer"] and "[1]" in data["answer"]
    cited = {c["number"]: c for c in data["citations"]}
    assert cited[1]["doc_id"] == data["results"][0]["doc_id"] == "holes"
    assert "generate_ms" in data["timings"] and "total_ms" in data["timings"]


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"query": "   "}, 422, "query must not be empty"),
        ({"query": ""}, 422, "query"),
        ({"query": "x", "top_k": 0}, 422, "top_k"),
        ({"query": "x", "top_k": 21}, 422, "top_k must be between 1 and 20"),
        ({"query": "x", "collection": "nope"}, 404, "collection 'nope' does not exist"),
        ({"query": "x", "mode": "fuzzy"}, 422, "mode"),
        ({"query": "x", "filters": {"secret": 1}}, 422, "cannot filter on 'secret'"),
        ({"query": "x", "filters": {"metadata.year": {}}}, 422, "range filter"),
        ({"query": "x", "unknown": 1}, 422, "unknown"),
    ],
)
def test_bad_requests_get_4xx_with_reason(
    client: TestClient, body: dict, status: int, reason: str
) -> None:
    for path in ("/v1/search", "/v1/query"):
        response = client.post(path, json=body)
        assert response.status_code == status, response.text
        assert reason in response.json()["detail"]


def test_oversized_body_is_413(client: TestClient) -> None:
    response = client.post("/v1/search", json={"query": "x" * 300_000})
    assert response.status_code == 413
    assert "exceeds the limit" in response.json()["detail"]


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/v1/search", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


def test_ingest_update_delete_through_api(client: TestClient) -> None:
    doc = {"id": "tmp", "text": "Temporary note about volcanoes and lava.", "title": "Tmp"}
    assert client.post("/v1/ingest?wait=true", json={"documents": [doc]}).json()["added"] == 1
    assert client.post("/v1/ingest?wait=true", json={"documents": [doc]}).json()["unchanged"] == 1
    changed = {**doc, "text": "Temporary note about glaciers."}
    assert client.post("/v1/ingest?wait=true", json={"documents": [changed]}).json()["updated"] == 1
    assert "tmp" in client.get("/v1/collections/kb/sources").json()
    assert client.post("/v1/delete", json={"doc_ids": ["tmp"]}).json() == {"deleted": 1}
    assert "tmp" not in client.get("/v1/collections/kb/sources").json()
    assert client.post("/v1/ingest?wait=true", json={"documents": []}).status_code == 422


def test_health_readiness_collections_and_docs(client: TestClient) -> None:
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["index"] == "qdrant-edge"
    assert "collections" not in health  # unauthenticated: it must not enumerate them
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"model": "ok", "index": "ok"}}
    (kb,) = [c for c in client.get("/v1/collections").json() if c["name"] == "kb"]
    assert kb["model"] == "all-MiniLM-L6-v2" and kb["dimension"] == 384 and kb["points"] >= 3
    assert client.get("/docs").status_code == 200
    assert "/v1/search" in client.get("/openapi.json").json()["paths"]


def test_model_mismatch_is_409(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    settings = Settings(data_dir=tmp_path)
    pipeline = RagPipeline.from_settings(
        settings, index=EdgeIndex(settings.data_dir), embedder=embedder
    )
    pipeline.ingest([Document("a", "text")], "c")
    embedder_name = embedder.name
    try:
        embedder.name = "some-other-model"
        with TestClient(create_app(pipeline)) as test_client:
            response = test_client.post("/v1/search", json={"query": "x", "collection": "c"})
        assert response.status_code == 409
        assert "was built with embedding model 'all-MiniLM-L6-v2'" in response.json()["detail"]
    finally:
        embedder.name = embedder_name
