"""API keys, scopes, rate limits and the bounded write queue, through the real app."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from ingest.embedding import SentenceTransformerEmbedder
from ingest.index import EdgeIndex
from ingest.settings import Settings
from service.api.app import auth_enabled, create_app
from service.auth import Authenticator, KeyStore, is_loopback
from service.pipeline import RagPipeline

DOC = {"id": "bees", "title": "Bees", "text": "Honey bees pollinate crops and dance."}


def test_keys_are_stored_hashed_and_revocable(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.sqlite")
    token, record = store.create("acme", {"read"}, name="web")
    assert token.startswith(f"gk_{record.prefix}_") and len(token) > 40
    assert store.lookup(token) == record
    assert store.lookup(token + "x") is None  # right prefix, wrong secret
    assert store.lookup(f"gk_{record.prefix}_guess") is None
    secret = token.split("_", 2)[2]
    raw = (tmp_path / "keys.sqlite").read_bytes()
    assert secret.encode() not in raw and token.encode() not in raw
    rows = sqlite3.connect(tmp_path / "keys.sqlite").execute("SELECT digest FROM api_keys")
    assert [len(r[0]) for r in rows] == [64]  # a SHA-256, not the key
    assert store.revoke(record.prefix) and not store.revoke(record.prefix)
    assert store.lookup(token) is None and not store.has_active_keys()


@pytest.mark.parametrize(
    ("tenant", "scopes", "rate"),
    [
        ("../x", {"read"}, None),
        ("acme", {"root"}, None),
        ("acme", set(), None),
        ("a", {"read"}, "x"),
    ],
)
def test_bad_key_requests_are_refused(
    tmp_path: Path, tenant: str, scopes: set[str], rate: str | None
) -> None:
    with pytest.raises(ValueError):
        KeyStore(tmp_path / "k.sqlite").create(tenant, scopes, rate_limit=rate)


@pytest.mark.parametrize(
    ("host", "auth", "on"),
    [
        ("127.0.0.1", "auto", False),
        ("localhost", "auto", False),
        ("::1", "auto", False),
        ("0.0.0.0", "auto", True),
        ("10.1.2.3", "auto", True),
        ("127.0.0.1", "on", True),
        ("0.0.0.0", "off", False),
    ],
)
def test_auth_is_on_beyond_loopback(host: str, auth: str, on: bool) -> None:
    assert auth_enabled(Settings(host=host, auth=auth)) is on
    assert is_loopback(host) is (host in ("127.0.0.1", "localhost", "::1"))


@pytest.fixture
def secured(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> Iterator[tuple[TestClient, KeyStore]]:
    settings = Settings(data_dir=tmp_path / "data", collection="kb", ingest_queue_size=2)
    store = KeyStore(tmp_path / "keys.sqlite")
    auth = Authenticator(store, enabled=True, default_rate="1000/minute")
    pipeline = RagPipeline.from_settings(
        settings, index=EdgeIndex(settings.data_dir), embedder=embedder
    )
    with TestClient(create_app(pipeline, authenticator=auth)) as client:
        yield client, store


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_401_403_and_scopes(secured: tuple[TestClient, KeyStore]) -> None:
    client, store = secured
    writer, _ = store.create("acme", {"ingest"})
    reader, _ = store.create("acme", {"read"})
    admin, _ = store.create("ops", {"admin"})
    search = {"query": "bees", "collection": "kb"}

    missing = client.post("/v1/search", json=search)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert "API key is required" in missing.json()["detail"]
    bad = client.post("/v1/search", json=search, headers=bearer("gk_nope_nope"))
    assert bad.status_code == 401 and "unknown or revoked" in bad.json()["detail"]
    basic = client.post("/v1/search", json=search, headers={"Authorization": "Basic abc"})
    assert basic.status_code == 401 and "Bearer" in basic.json()["detail"]

    ingest = client.post("/v1/ingest?wait=true", json={"documents": [DOC]}, headers=bearer(reader))
    assert ingest.status_code == 403 and "'ingest' scope" in ingest.json()["detail"]
    assert (
        client.post(
            "/v1/ingest?wait=true", json={"documents": [DOC]}, headers=bearer(writer)
        ).json()["added"]
        == 1
    )
    assert client.post("/v1/search", json=search, headers=bearer(writer)).status_code == 403
    found = client.post("/v1/search", json=search, headers=bearer(reader)).json()["results"]
    assert [r["doc_id"] for r in found] == ["bees"]
    via_header = client.post("/v1/search", json=search, headers={"X-API-Key": reader})
    assert via_header.status_code == 200

    # admin: drop and metrics; nobody else
    assert client.delete("/v1/collections/kb", headers=bearer(reader)).status_code == 403
    assert client.get("/metrics", headers=bearer(reader)).status_code == 403
    assert client.get("/metrics", headers=bearer(admin)).status_code == 200
    assert client.delete("/v1/collections/kb", headers=bearer(admin)).json() == {"dropped": "kb"}
    gone = client.post("/v1/search", json=search, headers=bearer(reader))
    assert gone.status_code == 404 and gone.json()["detail"] == "collection 'kb' does not exist"

    # health needs no key; a revoked key stops at its next request
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
    store.revoke(reader.split("_")[1])
    assert client.post("/v1/search", json=search, headers=bearer(reader)).status_code == 401


def test_openai_route_takes_the_key_as_bearer_token(secured: tuple[TestClient, KeyStore]) -> None:
    client, store = secured
    writer, _ = store.create("acme", {"ingest", "read"})
    client.post("/v1/ingest?wait=true", json={"documents": [DOC]}, headers=bearer(writer))
    chat = {"model": "grounded:kb", "messages": [{"role": "user", "content": "Who dances?"}]}
    assert client.post("/v1/chat/completions", json=chat).status_code == 401
    reply = client.post("/v1/chat/completions", json=chat, headers=bearer(writer))
    assert reply.status_code == 200 and reply.json()["citations"][0]["doc_id"] == "bees"
    assert client.get("/v1/models", headers=bearer(writer)).status_code == 200


def test_rate_limit_is_per_key_with_retry_after(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    store = KeyStore(tmp_path / "keys.sqlite")
    auth = Authenticator(store, enabled=True, default_rate="3/minute")
    slow, _ = store.create("a", {"read"})
    own, _ = store.create("b", {"read"}, rate_limit="5/minute")
    pipeline = RagPipeline.from_settings(
        settings, index=EdgeIndex(settings.data_dir), embedder=embedder
    )
    with TestClient(create_app(pipeline, authenticator=auth)) as client:
        codes = [client.get("/v1/collections", headers=bearer(slow)) for _ in range(4)]
        assert [r.status_code for r in codes] == [200, 200, 200, 429]
        retry = codes[-1].headers["Retry-After"]
        assert retry.isdigit() and 1 <= int(retry) <= 60
        assert "3/minute" in codes[-1].json()["detail"]
        # another key has its own budget, and its own limit
        other = [client.get("/v1/collections", headers=bearer(own)).status_code for _ in range(6)]
        assert other == [200] * 5 + [429]


def test_full_write_queue_answers_503_and_health_stays_up(
    secured: tuple[TestClient, KeyStore],
) -> None:
    client, store = secured
    writer, _ = store.create("acme", {"ingest", "read"})
    client.post("/v1/ingest?wait=true", json={"documents": [DOC]}, headers=bearer(writer))
    assert isinstance(client.app, FastAPI)
    queue = client.app.state.write_queue
    release = threading.Event()
    held = [queue.submit(release.wait) for _ in range(queue.capacity)]
    delete = {"collection": "kb", "doc_ids": [DOC["id"]]}
    try:
        busy = client.post("/v1/delete", json=delete, headers=bearer(writer))
        assert busy.status_code == 503 and busy.headers["Retry-After"].isdigit()
        assert "queue is full" in busy.json()["detail"]
        # reads, health and new ingest jobs never wait behind writes
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        search = {"query": "bees", "collection": "kb"}
        assert client.post("/v1/search", json=search, headers=bearer(writer)).status_code == 200
        queued = client.post("/v1/ingest", json={"documents": [DOC]}, headers=bearer(writer))
        assert queued.status_code == 202
        assert client.get("/metrics").status_code == 401  # auth is on: metrics need admin
    finally:
        release.set()
        for future in held:
            future.result(timeout=10)
    assert client.post("/v1/delete", json=delete, headers=bearer(writer)).json()["deleted"] == 1


def test_chunked_body_over_the_limit_is_413(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    settings = Settings(data_dir=tmp_path / "data", max_body_bytes=1000)
    pipeline = RagPipeline.from_settings(
        settings, index=EdgeIndex(settings.data_dir), embedder=embedder
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: the size is only known while reading
        yield b'{"documents": [{"id": "a", "text": "'
        for _ in range(10):
            yield b"x" * 200
        yield b'"}]}'

    with TestClient(create_app(pipeline)) as client:
        response = client.post(
            "/v1/ingest?wait=true", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413, response.text
        assert "exceeds the limit of 1000 bytes" in response.json()["detail"]
        assert client.get("/v1/collections").json() == []  # nothing was written
