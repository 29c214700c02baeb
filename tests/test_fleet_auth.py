"""API replicas share keys and rate limits through a real Redis server: the same key store
contract as the SQLite file, and one budget per key across two authenticators."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli_runner import grounded

from service.auth import (
    ApiKeyStore,
    Authenticator,
    KeyStore,
    RateLimited,
    RedisKeyStore,
    Unauthenticated,
)


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ApiKeyStore]:
    made: ApiKeyStore
    if request.param == "sqlite":
        made = KeyStore(tmp_path / "keys.sqlite")
    else:
        made = RedisKeyStore(request.getfixturevalue("redis_url"), prefix=f"t{time.time_ns()}:")
    yield made
    made.close()


def test_key_store_contract(store: ApiKeyStore) -> None:
    assert not store.has_active_keys() and store.list() == []
    token, record = store.create("acme", {"read", "ingest"}, name="app", rate_limit="5/second")
    found = store.lookup(token)
    assert found is not None and found.tenant == "acme" and found.scopes == {"read", "ingest"}
    assert found.rate_limit == "5/second" and found.name == "app"
    assert store.lookup(token[:-1] + ("A" if token[-1] != "A" else "B")) is None  # wrong secret
    assert store.lookup("gk_nope_x") is None and store.lookup("not a key") is None
    assert [r.prefix for r in store.list()] == [record.prefix] and store.has_active_keys()
    assert store.revoke(record.prefix) is True
    assert store.revoke(record.prefix) is False and store.revoke("missing") is False
    assert store.lookup(token) is None and not store.has_active_keys()
    assert store.list()[0].revoked_at is not None


def test_replicas_share_one_rate_budget(redis_url: str) -> None:
    store = RedisKeyStore(redis_url, prefix="rate:")
    token, _ = store.create("acme", {"read"}, rate_limit="3/minute")
    storage = redis_url.replace("/0", "/1")
    replicas = [
        Authenticator(store, enabled=True, rate_storage=storage),
        Authenticator(store, enabled=True, rate_storage=storage),
    ]
    for replica in [replicas[0], replicas[1], replicas[0]]:
        principal = replica.authenticate(f"Bearer {token}")
        replica.authorize(principal, ("read",), "POST /v1/search")
    with pytest.raises(RateLimited) as spent:
        replicas[1].authorize(replicas[1].authenticate(f"Bearer {token}"), ("read",), "x")
    assert spent.value.retry_after >= 1
    record = store.lookup(token)
    assert record is not None
    store.revoke(record.prefix)
    with pytest.raises(Unauthenticated):  # a revoke on one replica holds on the other
        replicas[0].authenticate(f"Bearer {token}")


def test_keys_cli_writes_to_the_shared_store(redis_url: str, tmp_path: Path) -> None:
    env = {"GROUNDED_KEYS_URL": redis_url.replace("/0", "/2")}
    created = grounded(
        "keys", "create", "--tenant", "acme", "--scope", "read", data_dir=tmp_path, env=env
    )
    token = next(w for w in created.stdout.split() if w.startswith("gk_"))
    assert RedisKeyStore(env["GROUNDED_KEYS_URL"]).lookup(token) is not None
    assert not (tmp_path / "keys.sqlite").exists()
    listed = grounded("keys", "list", data_dir=tmp_path, env=env)
    assert "acme" in listed.stdout


def test_a_prefix_collision_never_overwrites_a_key(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisKeyStore(redis_url, prefix=f"c{time.time_ns()}:")
    prefixes = iter(["aaaa0000", "aaaa0000", "bbbb1111"])
    monkeypatch.setattr("service.auth.secrets.token_hex", lambda _n: next(prefixes))
    first, _ = store.create("acme", {"read"})
    second, record = store.create("globex", {"admin"})
    assert record.prefix == "bbbb1111"
    owners = [store.lookup(token) for token in (first, second)]
    assert [o.tenant if o else None for o in owners] == ["acme", "globex"]
