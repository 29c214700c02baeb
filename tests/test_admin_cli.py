"""Operator commands as a user runs them: ``grounded keys``, ``grounded serve`` beyond loopback,
``grounded collections``. Real processes, real SQLite key store, a real server.

The server binds ``0.0.0.0`` (the case that needs keys) but the tests only ever connect to
``127.0.0.1``.
"""

import hashlib
import json
from pathlib import Path

import httpx
import pytest
from support.cli_runner import grounded
from support.serve import free_port, serving

from ingest.build import build_ingestor
from ingest.documents import Document
from ingest.embedding import SentenceTransformerEmbedder
from ingest.index import EdgeIndex
from ingest.settings import Settings
from service.auth import KeyStore

pytestmark = pytest.mark.slow  # real `grounded` processes and a real server


def _one_line(text: str) -> str:
    """Rich wraps long messages; compare them with their whitespace collapsed."""
    return " ".join(text.split())


def _store_bytes(data: Path) -> bytes:
    """Every byte of the key store: the SQLite file and its WAL / shared-memory companions."""
    files = sorted(data.glob("keys.sqlite*"))
    assert data / "keys.sqlite" in files
    return b"".join(f.read_bytes() for f in files)


# keys ----------------------------------------------------------------------------------------
def test_keys_create_list_revoke_and_refuse_bad_input(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = json.loads(
        grounded(
            "keys",
            "create",
            "--tenant",
            "acme",
            "--scope",
            "read",
            "--scope",
            "ingest",
            "--name",
            "web",
            "--json",
            data_dir=data,
        ).stdout
    )
    token, prefix = created["key"], created["prefix"]
    assert (created["tenant"], created["scopes"]) == ("acme", ["ingest", "read"])
    marker, key_prefix, secret = token.split("_", 2)
    assert (marker, key_prefix) == ("gk", prefix) and len(secret) >= 32

    # A second key, written by another process (this one) into the same file.
    other = KeyStore(data / "keys.sqlite")
    other_token, other_record = other.create("globex", {"read"}, name="reports")
    other.close()

    # Only the hash is stored: the secret is nowhere in the file's bytes, its SHA-256 is.
    stored = _store_bytes(data)
    digest = hashlib.sha256(token.encode()).hexdigest()
    for leaked in (token, secret, other_token, other_token.split("_", 2)[2]):
        assert leaked.encode() not in stored
    assert digest.encode() in stored

    assert grounded("keys", "revoke", prefix, data_dir=data).stdout.strip() == f"revoked {prefix}"
    listed = grounded("keys", "list", "--json", data_dir=data).stdout
    assert secret not in listed and digest not in listed and "digest" not in listed
    rows = {row["prefix"]: row for row in json.loads(listed)}
    assert set(rows) == {prefix, other_record.prefix}
    web, reports = rows[prefix], rows[other_record.prefix]
    assert (web["tenant"], web["scopes"], web["name"]) == ("acme", ["ingest", "read"], "web")
    assert web["revoked_at"] is not None
    assert (reports["tenant"], reports["scopes"], reports["revoked_at"]) == (
        "globex",
        ["read"],
        None,
    )
    assert not any("key" in row or "secret" in row for row in rows.values())

    unknown = grounded("keys", "revoke", "00000000", data_dir=data, check_rc=1)
    assert "no active key with prefix '00000000'" in unknown.stderr

    bad_scope = grounded(
        "keys", "create", "--tenant", "acme", "--scope", "root", data_dir=data, check_rc=2
    )
    assert "scopes must be some of read, ingest, admin" in _one_line(bad_scope.stderr)
    bad_tenant = grounded(
        "keys", "create", "--tenant", "../acme", "--scope", "read", data_dir=data, check_rc=2
    )
    assert "invalid tenant name" in bad_tenant.stderr
    # Neither refusal wrote a key.
    assert len(KeyStore(data / "keys.sqlite").list()) == 2


# serve ---------------------------------------------------------------------------------------
def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "plants.md").write_text("# Plants\n\nPhotosynthesis converts light into sugar.\n")
    (root / "tides.txt").write_text("The moon's gravity pulls the oceans into tides.")
    return root


def test_serve_beyond_loopback_requires_keys(tmp_path: Path, corpus: Path) -> None:
    data = tmp_path / "data"
    refused = grounded(
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        str(free_port()),
        data_dir=data,
        check_rc=2,
        timeout=120,
    )
    message = _one_line(refused.stderr)
    assert "grounded keys create" in message and "--insecure" in message

    store = KeyStore(data / "keys.sqlite")
    writer, _ = store.create("acme", {"read", "ingest"}, name="writer")
    reader, reader_record = store.create("acme", {"read"}, name="reader")
    outsider, _ = store.create("globex", {"read"}, name="outsider")

    search = {"query": "how do plants make sugar", "collection": "kb", "top_k": 3}
    with serving(data, "--host", "0.0.0.0") as served:
        url, stderr = served.url, served.stderr
        http = httpx.Client(base_url=url, timeout=60)

        anonymous = http.post("/v1/search", json=search)
        assert anonymous.status_code == 401, anonymous.text
        assert anonymous.headers["WWW-Authenticate"] == "Bearer"
        forged = http.post("/v1/search", json=search, headers=_bearer(f"gk_{reader[3:11]}_x"))
        assert forged.status_code == 401
        missing = http.post("/v1/search", json=search, headers=_bearer(writer))
        assert missing.status_code == 404 and "does not exist" in missing.json()["detail"]

        doc = {"id": "glaciers", "text": "Glaciers retreat as the climate warms."}
        body = {"collection": "kb", "documents": [doc]}
        read_only = http.post("/v1/ingest?wait=true", json=body, headers=_bearer(reader))
        assert read_only.status_code == 403 and "ingest" in read_only.json()["detail"]
        ingested = http.post("/v1/ingest?wait=true", json=body, headers=_bearer(writer))
        assert ingested.status_code == 200 and ingested.json()["added"] == 1

        # The CLI through the server: the key comes from GROUNDED_API_KEY.
        args = ("ingest", str(corpus), "-c", "kb", "--json", "--server", url)
        keyless = grounded(*args, data_dir=data, check_rc=1)
        assert "401" in keyless.stderr and "API key" in _one_line(keyless.stderr)
        keyed = grounded(*args, data_dir=data, env={"GROUNDED_API_KEY": writer})
        assert json.loads(keyed.stdout)["added"] == 2

        found = http.post("/v1/search", json=search, headers=_bearer(reader))
        assert found.status_code == 200
        assert found.json()["results"][0]["doc_id"] == "corpus/plants.md"
        # Another tenant's key reaches none of acme's documents.
        elsewhere = http.post("/v1/search", json=search, headers=_bearer(outsider))
        assert elsewhere.status_code == 200 and elsewhere.json()["results"] == []

        # Revoked from another process: refused from the next request on.
        assert store.revoke(reader_record.prefix)
        assert http.post("/v1/search", json=search, headers=_bearer(reader)).status_code == 401
        http.close()
    store.close()
    banner = _one_line(stderr.read_text())
    assert "grounded is ready" in banner and "Authorization: Bearer <API key>" in banner
    assert "WITHOUT authentication" not in banner


def test_serve_insecure_and_loopback_need_no_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    doc = {"id": "glaciers", "text": "Glaciers retreat as the climate warms."}
    search = {"query": "why do glaciers retreat", "collection": "kb"}
    with serving(data, "--host", "0.0.0.0", "--insecure") as served:
        url, stderr = served.url, served.stderr
        ingested = httpx.post(
            f"{url}/v1/ingest?wait=true", json={"collection": "kb", "documents": [doc]}, timeout=60
        )
        assert ingested.status_code == 200, ingested.text
    warning = _one_line(stderr.read_text())
    assert "serving on 0.0.0.0 WITHOUT authentication" in warning
    assert not (data / "keys.sqlite").exists() or not KeyStore(data / "keys.sqlite").list()

    with serving(data) as served:
        url, stderr = served.url, served.stderr  # the default: loopback, no keys
        found = httpx.post(f"{url}/v1/search", json=search, timeout=60)
        assert found.status_code == 200, found.text
        assert found.json()["results"][0]["doc_id"] == "glaciers"
    banner = _one_line(stderr.read_text())
    assert "grounded is ready" in banner and "http://127.0.0.1:" in banner
    assert "WITHOUT authentication" not in banner and "Authorization" not in banner


# collections ---------------------------------------------------------------------------------
def test_collections_list_and_drop(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    index = EdgeIndex(data)
    try:
        for name, text in (("kb", "Glaciers retreat."), ("zebra-secrets", "Stripes confuse.")):
            ingestor = build_ingestor(settings, index, embedder, name)
            assert ingestor.ingest([Document(f"{name}-doc", text)]).added == 1
    finally:
        index.close()
    # What a path-shaped name would reach: next to the shards, and next to the data dir.
    outside = [data / "x" / "keep.txt", tmp_path / "x" / "keep.txt"]
    for sentinel in outside:
        sentinel.parent.mkdir(parents=True)
        sentinel.write_text("keep me")

    listed = grounded("collections", data_dir=data).stdout
    assert "kb" in listed and "zebra-secrets" in listed and "all-MiniLM-L6-v2" in listed

    traversal = grounded("collections", "drop", "../x", "--yes", data_dir=data, check_rc=2)
    assert "invalid collection name" in traversal.stderr
    assert all(s.read_text() == "keep me" for s in outside)

    absent = grounded("collections", "drop", "nope", "--yes", data_dir=data, check_rc=1)
    said = absent.stdout + absent.stderr
    assert "'nope' does not exist" in said
    assert "zebra" not in said and "'kb'" not in said

    dropped = grounded("collections", "drop", "kb", "--yes", data_dir=data)
    assert "dropped kb (1 points)" in dropped.stdout
    gone = grounded("search", "glaciers", "-c", "kb", data_dir=data, check_rc=1)
    assert "collection 'kb' does not exist" in gone.stderr

    assert all(s.read_text() == "keep me" for s in outside)
    assert not (data / "collections" / "kb").exists()
    index = EdgeIndex(data)
    try:
        assert index.list_collections() == ["zebra-secrets"]
        assert index.count("zebra-secrets") == 1
    finally:
        index.close()
