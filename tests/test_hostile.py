"""The security review's hostile inputs, each through every route that takes it.

Each must get a clear 4xx in grounded's error shape (never a 5xx) and change nothing it should not:
nothing is created, written or removed outside the data directory (the sandbox around it is
snapshotted before and after, a sibling data directory included), no collection appears or
disappears inside it, and the collection still answers searches afterwards.

The app is the real one (real Edge shards on disk, the real MiniLM model), through TestClient
with ``raise_server_exceptions=False`` so that a 500 is seen as the client sees it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from support.hostile import (
    COLLECTION_NAMES,
    HOSTILE_METADATA,
    HOSTILE_SEARCH_OPTIONS,
    check_error_body,
    collection_name,
    raw_json,
    tree,
)

from ingest.documents import Document
from ingest.embedding import SentenceTransformerEmbedder
from ingest.index import EdgeIndex
from ingest.settings import Settings
from service.api.app import create_app
from service.pipeline import RagPipeline

MAX_BODY_BYTES = 200_000
MAX_DOCUMENTS = 8
MAX_DOCUMENT_BYTES = 4096

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
]
PRIVATE = "private-notes"  # a second collection whose name no error may reveal
CHAT = {"messages": [{"role": "user", "content": "What do bees share?"}]}


@dataclass
class World:
    root: Path  # the sandbox: everything an escaping name could reach
    data_dir: Path
    outside: Path  # where the absolute-path attack points
    app: FastAPI
    client: TestClient

    def state(self) -> tuple[dict[str, Any], list[str], dict[str, str]]:
        """What no refused request may change: the sandbox outside the data directory, the
        collection folders inside it, and the documents of ``kb``."""
        folders = sorted(p.name for p in (self.data_dir / "collections").iterdir())
        sources = self.client.get("/v1/collections/kb/sources")
        assert sources.status_code == 200, sources.text
        return tree(self.root, exclude=self.data_dir), folders, sources.json()

    def assert_searchable(self, collection: str = "kb", query: str = "waggle dance") -> None:
        response = self.client.post("/v1/search", json={"query": query, "collection": collection})
        assert response.status_code == 200, response.text
        assert response.json()["results"], response.text


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder
) -> Iterator[World]:
    root = tmp_path_factory.mktemp("hostile")
    data_dir = root / "jail" / "data"
    outside = root / "outside"
    outside.mkdir()
    # Another deployment's data directory next to ours, with a collection to steal or destroy.
    sibling = root / "jail" / "sibling"
    other = RagPipeline.from_settings(
        Settings(data_dir=sibling, collection="victim"), index=EdgeIndex(sibling), embedder=embedder
    )
    other.ingest([Document("v1", "The victim's notes about lighthouses.")], "victim")
    other.close()
    settings = Settings(
        data_dir=data_dir,
        collection="kb",
        max_body_bytes=MAX_BODY_BYTES,
        max_documents_per_request=MAX_DOCUMENTS,
        max_document_bytes=MAX_DOCUMENT_BYTES,
    )
    pipeline = RagPipeline.from_settings(settings, index=EdgeIndex(data_dir), embedder=embedder)
    app = create_app(pipeline)
    with TestClient(app, raise_server_exceptions=False) as client:
        for collection in ("kb", PRIVATE):
            response = client.post(
                "/v1/ingest?wait=true", json={"collection": collection, "documents": DOCS}
            )
            assert response.status_code == 200, response.text
        yield World(root, data_dir, outside, app, client)


_counter = iter(range(1_000_000))


@pytest.fixture
def fresh(world: World) -> str:
    """A new collection holding ``DOCS``, for attacks that could poison what they touch."""
    name = f"fresh{next(_counter)}"
    response = world.client.post(
        "/v1/ingest?wait=true", json={"collection": name, "documents": DOCS}
    )
    assert response.status_code == 200, response.text
    return name


def assert_refused(world: World, response: Any, *statuses: int) -> str:
    """A clear 4xx among ``statuses`` in grounded's error shape, revealing no server path."""
    assert response.status_code in statuses, (response.status_code, response.text)
    detail = check_error_body(response.json())
    assert str(world.root) not in response.text, response.text
    return detail


# Collection names ------------------------------------------------------------------------


def _by_name(route: str, name: str) -> tuple[str, dict[str, Any]]:
    if route == "ingest":
        doc = {"id": "hostile", "text": "A hostile document about zeppelins."}
        return "/v1/ingest?wait=true", {"collection": name, "documents": [doc]}
    if route == "search":
        return "/v1/search", {"query": "waggle dance", "collection": name}
    if route == "query":
        return "/v1/query", {"query": "waggle dance", "collection": name}
    if route == "delete":
        return "/v1/delete", {"collection": name, "doc_ids": ["bees", "rome", "v1"]}
    if route == "chat-model":
        return "/v1/chat/completions", {**CHAT, "model": f"grounded:{name}"}
    assert route == "chat-collection"
    return "/v1/chat/completions", {**CHAT, "collection": name}


@pytest.mark.parametrize("name", list(COLLECTION_NAMES))
@pytest.mark.parametrize(
    "route", ["ingest", "search", "query", "delete", "chat-model", "chat-collection"]
)
def test_path_like_collection_name_is_422_and_touches_nothing(
    world: World, route: str, name: str
) -> None:
    before = world.state()
    path, body = _by_name(route, collection_name(name, world.outside))
    response = world.client.post(path, json=body)
    assert_refused(world, response, 422)
    assert world.state() == before
    world.assert_searchable()


@pytest.mark.parametrize("name", list(COLLECTION_NAMES))
def test_path_like_collection_in_url_is_404_or_422(world: World, name: str) -> None:
    before = world.state()
    encoded = quote(collection_name(name, world.outside), safe="").replace(".", "%2E")
    response = world.client.get(f"/v1/collections/{encoded}/sources")
    assert_refused(world, response, 404, 422)
    assert world.state() == before


# Metadata, filters and numbers -----------------------------------------------------------


@pytest.mark.parametrize("metadata", list(HOSTILE_METADATA))
def test_unstorable_metadata_is_422_and_does_not_poison(
    world: World, fresh: str, metadata: str
) -> None:
    before = world.state()
    doc = raw_json(
        {"id": "hostile", "text": "A hostile document about zeppelins."},
        f'"metadata": {HOSTILE_METADATA[metadata]}',
    )
    body = b'{"collection": "' + fresh.encode() + b'", "documents": [' + doc + b"]}"
    response = world.client.post(
        "/v1/ingest?wait=true", content=body, headers={"content-type": "application/json"}
    )
    assert_refused(world, response, 422)
    assert world.state() == before
    # Nothing stored: the collection answers, the hostile document is not in it.
    found = world.client.post("/v1/search", json={"query": "zeppelins", "collection": fresh})
    assert found.status_code == 200, found.text
    assert "hostile" not in {r["doc_id"] for r in found.json()["results"]}
    sources = world.client.get(f"/v1/collections/{fresh}/sources")
    assert sources.status_code == 200, sources.text
    assert "hostile" not in sources.json()
    world.assert_searchable(fresh)


def _search_body(route: str, option: str) -> bytes:
    if route == "chat":
        return raw_json(CHAT, HOSTILE_SEARCH_OPTIONS[option])
    return raw_json({"query": "waggle dance"}, HOSTILE_SEARCH_OPTIONS[option])


@pytest.mark.parametrize("option", list(HOSTILE_SEARCH_OPTIONS))
@pytest.mark.parametrize(
    ("route", "path"),
    [("search", "/v1/search"), ("query", "/v1/query"), ("chat", "/v1/chat/completions")],
)
def test_hostile_filters_and_numbers_are_422(
    world: World, route: str, path: str, option: str
) -> None:
    response = world.client.post(
        path, content=_search_body(route, option), headers={"content-type": "application/json"}
    )
    assert_refused(world, response, 422)
    world.assert_searchable()


# Ingest requests -------------------------------------------------------------------------


def test_duplicate_ids_in_one_request_are_422(world: World, fresh: str) -> None:
    docs = [
        {"id": "twin", "text": "The first twin writes about comets."},
        {"id": "twin", "text": "The second twin writes about glaciers."},
    ]
    before = world.client.get(f"/v1/collections/{fresh}/sources").json()
    response = world.client.post(
        "/v1/ingest?wait=true", json={"collection": fresh, "documents": docs}
    )
    detail = assert_refused(world, response, 422)
    assert "twin" in detail and "duplicate" in detail.lower()
    assert world.client.get(f"/v1/collections/{fresh}/sources").json() == before


@pytest.mark.parametrize("text", ["", "   \n\t  "], ids=["empty", "whitespace"])
def test_empty_document_is_reported_as_skipped(world: World, fresh: str, text: str) -> None:
    response = world.client.post(
        "/v1/ingest?wait=true",
        json={"collection": fresh, "documents": [{"id": "blank", "text": text}]},
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["added"] == 0 and report["chunks_written"] == 0, report
    skipped = report.get("skipped")
    assert isinstance(skipped, list) and [s["id"] for s in skipped] == ["blank"], report
    assert isinstance(skipped[0].get("reason"), str) and skipped[0]["reason"], report
    assert "blank" not in world.client.get(f"/v1/collections/{fresh}/sources").json()
    world.assert_searchable(fresh)


def test_more_documents_than_the_limit_is_refused(world: World, fresh: str) -> None:
    docs = [{"id": f"many{i}", "text": f"Note {i} about rivers."} for i in range(MAX_DOCUMENTS + 1)]
    response = world.client.post(
        "/v1/ingest?wait=true", json={"collection": fresh, "documents": docs}
    )
    detail = assert_refused(world, response, 413, 422)
    assert str(MAX_DOCUMENTS) in detail, detail
    sources = world.client.get(f"/v1/collections/{fresh}/sources").json()
    assert not any(doc_id.startswith("many") for doc_id in sources)


def test_document_over_the_byte_limit_is_refused(world: World, fresh: str) -> None:
    # 2049 characters, 4098 UTF-8 bytes: the limit is on bytes.
    docs = [{"id": "big", "text": "é" * (MAX_DOCUMENT_BYTES // 2 + 1)}]
    response = world.client.post(
        "/v1/ingest?wait=true", json={"collection": fresh, "documents": docs}
    )
    detail = assert_refused(world, response, 413, 422)
    assert str(MAX_DOCUMENT_BYTES) in detail, detail
    assert "big" not in world.client.get(f"/v1/collections/{fresh}/sources").json()


# Body size -------------------------------------------------------------------------------


def _chunked(total: int) -> Iterator[bytes]:
    """A JSON search body of about ``total`` bytes, sent in pieces with no Content-Length."""
    yield b'{"query": "'
    piece = b"x" * 16_384
    for _ in range(total // len(piece) + 1):
        yield piece
    yield b'"}'


@pytest.mark.parametrize("path", ["/v1/search", "/v1/ingest?wait=true", "/v1/chat/completions"])
def test_chunked_body_over_the_limit_is_413(world: World, path: str) -> None:
    response = world.client.post(
        path,
        content=_chunked(MAX_BODY_BYTES + 50_000),
        headers={"content-type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    detail = assert_refused(world, response, 413)
    assert str(MAX_BODY_BYTES) in detail, detail
    world.assert_searchable()


@pytest.mark.parametrize("path", ["/v1/search", "/v1/ingest?wait=true"])
def test_body_over_the_limit_by_content_length_is_413(world: World, path: str) -> None:
    body = json.dumps({"query": "x" * (MAX_BODY_BYTES + 1)}).encode()
    response = world.client.post(path, content=body, headers={"content-type": "application/json"})
    assert_refused(world, response, 413)


# What errors reveal ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/search", {"query": "bees", "collection": "nope"}),
        ("POST", "/v1/query", {"query": "bees", "collection": "nope"}),
        ("POST", "/v1/chat/completions", {**CHAT, "collection": "nope"}),
        ("POST", "/v1/chat/completions", {**CHAT, "model": "grounded:nope"}),
        ("GET", "/v1/collections/nope/sources", None),
    ],
)
def test_404_does_not_list_other_collections(
    world: World, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = world.client.request(method, path, json=body)
    detail = assert_refused(world, response, 404)
    for name in ("kb", PRIVATE, "fresh", "victim"):
        assert name not in detail, detail


def test_500_is_generic_with_a_request_id(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "/internal/secret/path/xyzzy"

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError(f"index exploded at {secret}")

    pipeline: RagPipeline = world.app.state.pipeline
    monkeypatch.setattr(pipeline.retriever, "retrieve", broken)
    response = world.client.post("/v1/search", json={"query": "waggle dance"})
    assert response.status_code == 500, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    check_error_body(body)
    assert isinstance(body.get("request_id"), str) and body["request_id"], body
    assert secret not in response.text and "RuntimeError" not in response.text, response.text
