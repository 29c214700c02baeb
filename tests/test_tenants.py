"""Tenant isolation through the real app, over both Qdrant adapters.

Several tenants share collections and reuse each other's document ids with their own text and
metadata. A seeded random workload of ≥ 1,000 searches, answers and chat completions per adapter,
many of them crafted to reach across (another tenant's doc ids, owner, source or title in the
filters, filters on ``tenant`` itself, a collection only another tenant wrote to), must return
nothing that belongs to another tenant: every chunk, context block and citation is looked up in a
map of point id → tenant built from ``point_id(doc_id, chunk_index, tenant)``, and its metadata
owner is checked too. Sources, counts, deletes and re-ingests must stay per tenant as well.

The embedder is the session's real MiniLM behind a memo: the workload repeats its query texts and
the extractive generator re-embeds the same chunk sentences, so each distinct text is embedded
once (same vectors, a fraction of the time on small CI machines).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from qdrant_edge import KeywordIndexParams

from ingest.documents import point_id
from ingest.embedding import SentenceTransformerEmbedder
from ingest.index import EdgeIndex, SearchQuery, VectorIndex
from ingest.index.base import TENANT, tenant_condition
from ingest.index.server import ServerIndex
from ingest.settings import Settings
from service.api.app import create_app
from service.auth import Authenticator, KeyStore
from service.pipeline import RagPipeline

pytestmark = pytest.mark.slow  # a seeded workload of thousands of requests per adapter

SEED = 20_250_611
TENANTS = ("acme", "globex", "initech")
SHARED = ("kb", "wiki")  # every tenant writes here
PRIVATE = "vault"  # only VAULT_OWNER writes here; the others may still name it
VAULT_OWNER = "initech"
SHARED_IDS = tuple(f"doc-{i}" for i in range(6))  # every tenant has these, with its own text
OWN_IDS = 3  # plus "<tenant>-only-<n>" ids that no other tenant has
MAX_TOP_K = 10
QUERIES = 1_000  # per adapter

VOCAB = (  # noqa: SIM905 (a word list reads better as a string)
    "river bridge harvest engine copper lantern orchard glacier market signal garden harbor "
    "canyon falcon meadow violin compass pepper thunder marble ledger rocket tunnel velvet "
    "walnut beacon cactus dolphin ember fossil granite hammock island jasmine kettle lobster "
    "magnet nectar oyster pebble"
).split()
VERBS = ("inspected", "repaired", "painted", "measured", "moved", "counted", "sold", "cleaned")


# -- the memo embedder ---------------------------------------------------------------------------
class MemoEmbedder:
    """The real embedder, computing each distinct text once (vectors are deterministic)."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self.inner = inner
        self.name, self.dimension, self.max_tokens = inner.name, inner.dimension, inner.max_tokens
        self._queries: dict[str, np.ndarray] = {}
        self._docs: dict[str, np.ndarray] = {}

    @property
    def tokenizer(self) -> Any:
        return self.inner.tokenizer

    def embed_query(self, text: str) -> np.ndarray:
        if text not in self._queries:
            self._queries[text] = self.inner.embed_query(text)
        return self._queries[text].copy()

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._docs))
        if missing:
            self._docs.update(zip(missing, self.inner.embed_documents(missing), strict=True))
        if not texts:
            return self.inner.embed_documents([])
        return np.stack([self._docs[t] for t in texts])


@pytest.fixture(scope="module")
def memo(embedder: SentenceTransformerEmbedder) -> MemoEmbedder:
    return MemoEmbedder(embedder)


# -- the corpus ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Doc:
    tenant: str
    collection: str
    id: str
    text: str
    title: str
    source: str
    metadata: dict[str, Any]

    def body(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "title": self.title,
            "source": self.source,
            "metadata": self.metadata,
        }


def sentence(rng: random.Random, tenant: str) -> str:
    a, b, c = rng.sample(VOCAB, 3)
    return f"The {tenant} crew {rng.choice(VERBS)} the {a} near the {b} and the {c}."


def make_corpus(rng: random.Random) -> list[Doc]:
    """Each tenant: every shared id plus its own ids in every shared collection; the vault
    owner also writes to the private collection. Text, title, source and metadata name the
    tenant, so a leaked chunk is recognisable by content as well as by id."""
    docs = []
    plan = [(t, c) for c in SHARED for t in TENANTS] + [(VAULT_OWNER, PRIVATE)]
    for tenant, collection in plan:
        ids = [*SHARED_IDS, *(f"{tenant}-only-{n}" for n in range(OWN_IDS))]
        if collection == PRIVATE:
            ids = [*SHARED_IDS[:2], f"{tenant}-vault-0"]
        for doc_id in ids:
            others = [t for t in TENANTS if t != tenant]
            # A few documents claim another tenant in their own metadata: it must change nothing.
            claimed = rng.choice(others) if rng.random() < 0.2 else tenant
            docs.append(
                Doc(
                    tenant=tenant,
                    collection=collection,
                    id=doc_id,
                    text=f"{sentence(rng, tenant)} {sentence(rng, tenant)}",
                    title=f"{tenant} {rng.choice(VOCAB)} notes",
                    source=f"{tenant}/{collection}/{doc_id}.md",
                    metadata={"owner": tenant, "year": rng.randint(2015, 2024), "tenant": claimed},
                )
            )
    return docs


# -- the world: app, keys, corpus ingested through HTTP ------------------------------------------
@dataclass
class World:
    client: TestClient
    store: KeyStore
    index: VectorIndex
    keys: dict[str, str]
    docs: list[Doc]
    owner: dict[tuple[str, str], str] = field(default_factory=dict)  # (collection, point id)
    searched: list[SearchQuery] = field(default_factory=list)  # what reached index.search

    def headers(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}

    def docs_of(self, tenant: str, collection: str) -> list[Doc]:
        return [d for d in self.docs if d.tenant == tenant and d.collection == collection]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def open_world(
    index: VectorIndex,
    memo: MemoEmbedder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    only: tuple[str, str] | None = None,
) -> Iterator[World]:
    """The app over ``index`` with a read+ingest key per tenant and the corpus ingested through
    HTTP (only ``(tenant, collection)``'s part of it when given)."""
    index_calls: list[tuple[str, Any]] = []
    if isinstance(index, ServerIndex):  # local mode keeps no schema: record what was asked
        original_create = index.client.create_payload_index

        def create_payload_index(collection: str, name: str, schema: Any) -> Any:
            index_calls.append((name, schema))
            return original_create(collection, name, schema)

        monkeypatch.setattr(index.client, "create_payload_index", create_payload_index)

    searched: list[SearchQuery] = []
    original_search = index.search

    def search(collection: str, query: SearchQuery) -> Any:
        searched.append(query)
        return original_search(collection, query)

    monkeypatch.setattr(index, "search", search)

    settings = Settings(data_dir=tmp_path / "data", collection="kb", max_top_k=MAX_TOP_K)
    store = KeyStore(tmp_path / "keys.sqlite")
    auth = Authenticator(store, enabled=True, default_rate="100000/minute")
    pipeline = RagPipeline.from_settings(settings, index=index, embedder=memo)
    keys = {t: store.create(t, {"read", "ingest"}, name=f"{t} app")[0] for t in TENANTS}
    docs = make_corpus(random.Random(SEED))
    if only is not None:
        docs = [d for d in docs if (d.tenant, d.collection) == only]
    collections = sorted({d.collection for d in docs})
    with TestClient(create_app(pipeline, authenticator=auth)) as client:
        w = World(client, store, index, keys, docs, searched=searched)
        for collection in collections:
            for tenant in TENANTS:
                mine = w.docs_of(tenant, collection)
                if not mine:
                    continue
                body = {"collection": collection, "documents": [d.body() for d in mine]}
                r = client.post("/v1/ingest?wait=true", json=body, headers=w.headers(tenant))
                assert r.status_code == 200, r.text
                report = r.json()
                # New ids for this tenant, even where another tenant has the same doc id.
                assert report["added"] == len(mine) and report["updated"] == 0, report
                assert report["chunks_written"] == len(mine), "one chunk per short document"
                for d in mine:
                    w.owner[(collection, point_id(d.id, 0, tenant))] = tenant

        # Every stored point is in the map, and carries its tenant in the payload.
        for collection in collections:
            stored = set(index.point_ids(collection))
            expected = {pid for (c, pid) in w.owner if c == collection}
            assert stored == expected
            payloads = index.payloads(collection, sorted(stored))
            for pid, payload in payloads.items():
                assert payload[TENANT] == w.owner[(collection, pid)]
                assert payload["metadata"]["owner"] == payload[TENANT]

        # The tenant field is a keyword index marked is_tenant, in every collection.
        # (The fixture's ProcessIndex forwards to the very EdgeIndex checked here.)
        if isinstance(index, EdgeIndex):
            for collection in collections:
                params = index._shard(collection).info().payload_schema[TENANT].params
                assert isinstance(params, KeywordIndexParams) and params.is_tenant is True
        elif isinstance(index, ServerIndex):
            tenant_indexes = [s for name, s in index_calls if name == TENANT]
            assert len(tenant_indexes) == len(collections)
            assert all(s.is_tenant is True and s.type == "keyword" for s in tenant_indexes)
        searched.clear()
        yield w


@pytest.fixture
def world(
    index: VectorIndex, memo: MemoEmbedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    with open_world(index, memo, tmp_path, monkeypatch) as w:
        yield w


@pytest.fixture
def small_world(
    index: VectorIndex, memo: MemoEmbedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    """Only acme's documents in ``kb``: for the tests that need one tenant's data."""
    with open_world(index, memo, tmp_path, monkeypatch, only=("acme", "kb")) as w:
        yield w


# -- checking responses --------------------------------------------------------------------------
@dataclass
class Tally:
    queries: int = 0
    ok: int = 0
    refused: int = 0  # 422 for filters on the tenant field itself
    chunks_checked: int = 0
    cross_tenant: list[str] = field(default_factory=list)
    searches: int = 0  # index.search calls the requests made
    wrong_tenant_searches: int = 0  # ... without the caller's tenant as their first condition
    filter_violations: list[str] = field(default_factory=list)  # own chunks a filter excludes
    normal: int = 0
    normal_with_hits: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    endpoints: Counter[str] = field(default_factory=Counter)
    modes: Counter[str] = field(default_factory=Counter)


def check_chunk(
    w: World, tally: Tally, tenant: str, collection: str, chunk: dict[str, Any], where: str
) -> None:
    """One returned chunk (a result, a context block or a citation): the caller's, by its point
    id, its metadata owner and its text and source (which name their tenant)."""
    tally.chunks_checked += 1
    chunk_id = chunk.get("id") or chunk["chunk_id"]
    owner = w.owner.get((collection, chunk_id))
    others = [t for t in TENANTS if t != tenant]
    named = " ".join(str(chunk.get(k, "")) for k in ("text", "source", "title"))
    metadata_owner = chunk.get("metadata", {"owner": tenant}).get("owner")
    if owner != tenant or metadata_owner != tenant or any(o in named for o in others):
        tally.cross_tenant.append(
            f"{tenant} got {owner}'s {chunk_id} in {collection} ({where}): {named!r}"
        )


def returned_chunks(
    w: World, tally: Tally, tenant: str, collection: str, endpoint: str, data: dict[str, Any]
) -> list[dict[str, Any]]:
    """Check every chunk of a 200 response; returns the ranked results (chat: citations)."""
    if endpoint == "chat":
        answer = data["choices"][0]["message"]["content"]
        ranked = data["citations"]
        checked = {"citation": data["citations"]}
    else:
        answer = data.get("answer", "")
        ranked = data["results"]
        checked = {
            "result": data["results"],
            "context": data.get("context", []),
            "citation": data.get("citations", []),
        }
    for where, chunks in checked.items():
        for chunk in chunks:
            check_chunk(w, tally, tenant, collection, chunk, f"{endpoint} {where}")
    if any(o in answer for o in TENANTS if o != tenant):
        tally.cross_tenant.append(f"{tenant}'s answer quotes another tenant: {answer!r}")
    return ranked


# -- the randomized workload ---------------------------------------------------------------------
EXPECT_NONE = {  # filters that only another tenant's chunks could satisfy
    "other-doc-id",
    "other-owner",
    "other-owner-any",
    "other-source",
    "other-title",
    "own-owner-other-doc-id",
    "other-only-collection",
}
REFUSABLE = {"tenant-field", "tenant-field-any"}  # 422 is the expected answer


def crafted_filter(
    rng: random.Random, w: World, tenant: str, collection: str
) -> tuple[str, dict[str, Any]]:
    others = [t for t in TENANTS if t != tenant]
    other = rng.choice(others)
    theirs = w.docs_of(other, collection) or w.docs_of(other, SHARED[0])
    mine = w.docs_of(tenant, collection)
    their_only = [d.id for d in theirs if d.id not in {m.id for m in mine}]
    kind = rng.choices(
        [
            "none",
            "own-owner",
            "other-doc-id",
            "doc-id-any-mixed",
            "shared-doc-id",
            "other-owner",
            "other-owner-any",
            "metadata-tenant",
            "tenant-field",
            "tenant-field-any",
            "other-source",
            "other-title",
            "own-owner-other-doc-id",
            "year-range",
        ],
        weights=[30, 6, 8, 8, 6, 6, 4, 5, 4, 3, 4, 4, 4, 4],
    )[0]
    if kind == "none":
        return kind, {}
    if kind == "own-owner":
        return kind, {"metadata.owner": tenant}
    if kind == "other-doc-id":
        return kind, {"doc_id": rng.choice(their_only)}
    if kind == "doc-id-any-mixed":
        ids = rng.sample(their_only, 2) + rng.sample([*SHARED_IDS, "no-such-doc"], 2)
        ids += [f"{other}\x1f{rng.choice(SHARED_IDS)}"]  # the separator inside point ids
        rng.shuffle(ids)
        return kind, {"doc_id": {"any": ids}}
    if kind == "shared-doc-id":
        return kind, {"doc_id": rng.choice(SHARED_IDS)}
    if kind == "other-owner":
        return kind, {"metadata.owner": other}
    if kind == "other-owner-any":
        return kind, {"metadata.owner": {"any": others}}
    if kind == "metadata-tenant":
        return kind, {"metadata.tenant": other}
    if kind == "tenant-field":
        return kind, {"tenant": other}
    if kind == "tenant-field-any":
        return kind, {"tenant": {"any": list(TENANTS)}}
    if kind == "other-source":
        return kind, {"source": rng.choice(theirs).source}
    if kind == "other-title":
        return kind, {"title": rng.choice(theirs).title}
    if kind == "own-owner-other-doc-id":
        return kind, {"metadata.owner": tenant, "doc_id": rng.choice(their_only)}
    return kind, {"metadata.year": {"gte": rng.randint(2015, 2020), "lte": 2024}}


def query_pool(rng: random.Random, docs: list[Doc]) -> list[str]:
    """Plain questions, and lures: another tenant's text verbatim, or its name and words."""
    pool = {" ".join(rng.sample(VOCAB, rng.randint(2, 4))) for _ in range(60)}
    pool |= {f"What was done to the {rng.choice(VOCAB)} by the crew?" for _ in range(30)}
    pool |= {d.text for d in docs}
    pool |= {f"{t} {' '.join(rng.sample(VOCAB, 2))}" for t in TENANTS for _ in range(10)}
    return sorted(pool)


def run_workload(w: World, rng: random.Random, n: int) -> Tally:
    tally = Tally()
    pool = query_pool(rng, w.docs)
    for _ in range(n):
        tenant = rng.choice(TENANTS)
        collection = rng.choice(SHARED) if rng.random() < 0.92 else PRIVATE
        filters: dict[str, Any]
        if collection == PRIVATE and tenant != VAULT_OWNER:
            kind, filters = "other-only-collection", {}
        else:
            kind, filters = crafted_filter(rng, w, tenant, collection)
        endpoint = rng.choices(["search", "query", "chat"], weights=[5, 3, 2])[0]
        mode = rng.choice(["hybrid", "dense", "sparse"])
        top_k = MAX_TOP_K if rng.random() < 0.2 else rng.randint(1, MAX_TOP_K)
        text = rng.choice(pool)
        options: dict[str, Any] = {"top_k": top_k, "mode": mode, "filters": filters}
        if endpoint == "chat":
            path = "/v1/chat/completions"
            body = {
                "model": f"grounded:{collection}",
                "messages": [{"role": "user", "content": text}],
                **options,
            }
        else:
            path = f"/v1/{endpoint}"
            body = {"query": text, "collection": collection, **options}

        w.searched.clear()
        r = w.client.post(path, json=body, headers=w.headers(tenant))
        tally.queries += 1
        tally.kinds[kind] += 1
        tally.endpoints[endpoint] += 1
        tally.modes[mode] += 1
        tally.searches += len(w.searched)
        tally.wrong_tenant_searches += sum(
            q.tenant != tenant or q.conditions[:1] != (tenant_condition(tenant),)
            for q in w.searched
        )
        if kind in REFUSABLE and r.status_code == 422:
            tally.refused += 1
            continue
        if kind == "other-only-collection" and endpoint == "chat":
            # a tenant's model list holds only its own collections: another's is no model
            assert r.status_code == 404, r.text
            tally.refused += 1
            continue
        assert r.status_code == 200, (kind, body, r.text)
        tally.ok += 1
        ranked = returned_chunks(w, tally, tenant, collection, endpoint, r.json())
        if kind in EXPECT_NONE and ranked:
            tally.filter_violations.append(f"{kind} {filters} gave {len(ranked)} to {tenant}")
        if kind in ("shared-doc-id", "doc-id-any-mixed"):
            wanted = filters["doc_id"]
            wanted = set(wanted["any"]) if isinstance(wanted, dict) else {wanted}
            if any(c["doc_id"] not in wanted for c in ranked):
                tally.filter_violations.append(f"{kind} {filters} gave {ranked} to {tenant}")
        if kind in ("none", "own-owner"):
            tally.normal += 1
            tally.normal_with_hits += bool(ranked)
    return tally


def test_randomized_workload_never_crosses_tenants(world: World) -> None:
    started = time.perf_counter()
    tally = run_workload(world, random.Random(SEED + 1), QUERIES)
    seconds = time.perf_counter() - started
    summary = (
        f"{tally.queries} queries ({tally.ok} answered, {tally.refused} refused) in {seconds:.1f}s;"
        f" {tally.chunks_checked} chunks checked; {len(tally.cross_tenant)} cross-tenant;"
        f" normal queries with hits {tally.normal_with_hits}/{tally.normal};"
        f" endpoints {dict(tally.endpoints)}; modes {dict(tally.modes)}; kinds {dict(tally.kinds)}"
    )
    print(summary)
    assert tally.cross_tenant == [], summary
    assert tally.wrong_tenant_searches == 0, summary
    assert tally.filter_violations == [], summary
    assert tally.searches >= tally.ok, summary  # every answered request went to the index
    # The workload was what it claims: big, varied, crafted, and it did find things.
    assert tally.queries >= 1_000
    assert min(tally.endpoints.values()) >= 150 and min(tally.modes.values()) >= 250, summary
    assert all(tally.kinds[k] >= 20 for k in (*EXPECT_NONE, *REFUSABLE)), summary
    assert tally.normal >= 300 and tally.normal_with_hits >= 0.9 * tally.normal, summary
    assert tally.chunks_checked >= 2 * tally.queries, summary


# -- sources, counts, deletes, re-ingest ---------------------------------------------------------
def own_ids(w: World, tenant: str, collection: str, **filters: Any) -> list[str]:
    body = {"query": "crew", "collection": collection, "top_k": MAX_TOP_K, "filters": filters}
    r = w.client.post("/v1/search", json=body, headers=w.headers(tenant))
    assert r.status_code == 200, r.text
    return [c["id"] for c in r.json()["results"]]


def counts(w: World, tenant: str) -> dict[str, int]:
    r = w.client.get("/v1/collections", headers=w.headers(tenant))
    assert r.status_code == 200, r.text
    return {c["name"]: c["points"] for c in r.json()}


def test_sources_counts_delete_and_reingest_stay_per_tenant(world: World) -> None:
    w = world
    c = w.client
    for tenant in TENANTS:
        for collection in (*SHARED, PRIVATE):
            r = c.get(f"/v1/collections/{collection}/sources", headers=w.headers(tenant))
            assert r.status_code == 200, r.text
            assert r.json() == {d.id: d.source for d in w.docs_of(tenant, collection)}
        # only collections the tenant wrote to are listed, each with its own points only
        assert counts(w, tenant) == {
            collection: len(w.docs_of(tenant, collection))
            for collection in (*SHARED, PRIVATE)
            if w.docs_of(tenant, collection)
        }
    assert PRIVATE not in counts(w, "acme") and counts(w, VAULT_OWNER)[PRIVATE] > 0
    models = c.get("/v1/models", headers=w.headers("acme")).json()["data"]
    assert f"grounded:{PRIVATE}" not in {m["id"] for m in models}
    # The per-tenant counts add up to the collection's points: nobody's are hidden or doubled.
    for collection in SHARED:
        assert sum(counts(w, t)[collection] for t in TENANTS) == w.index.count(collection)

    # Deleting a doc id that every tenant has removes the caller's copy only.
    before = {t: counts(w, t) for t in TENANTS}
    r = c.post(
        "/v1/delete", json={"collection": "kb", "doc_ids": ["doc-0"]}, headers=w.headers("acme")
    )
    assert r.json() == {"deleted": 1}
    assert own_ids(w, "acme", "kb", doc_id="doc-0") == []
    assert "doc-0" not in c.get("/v1/collections/kb/sources", headers=w.headers("acme")).json()
    assert counts(w, "acme")["kb"] == before["acme"]["kb"] - 1
    for other in ("globex", "initech"):
        assert own_ids(w, other, "kb", doc_id="doc-0") == [point_id("doc-0", 0, other)]
        assert "doc-0" in c.get("/v1/collections/kb/sources", headers=w.headers(other)).json()
        assert counts(w, other) == before[other]
    # A doc id only another tenant has: nothing to delete, and theirs stays.
    r = c.post(
        "/v1/delete",
        json={"collection": "kb", "doc_ids": ["globex-only-0", "doc-1"]},
        headers=w.headers("acme"),
    )
    assert r.json() == {"deleted": 1}  # acme's doc-1 only
    assert own_ids(w, "globex", "kb", doc_id="globex-only-0") == [
        point_id("globex-only-0", 0, "globex")
    ]
    assert own_ids(w, "globex", "kb", doc_id="doc-1") == [point_id("doc-1", 0, "globex")]
    assert counts(w, "globex") == before["globex"]

    # The same new doc id from two tenants: both kept, neither overwrites the other.
    def ingest(tenant: str, text: str) -> dict[str, Any]:
        doc = {"id": "same", "text": text, "metadata": {"owner": tenant}}
        body = {"collection": "wiki", "documents": [doc]}
        r = c.post("/v1/ingest?wait=true", json=body, headers=w.headers(tenant))
        assert r.status_code == 200, r.text
        return r.json()

    def same_text(tenant: str) -> list[str]:
        body = {"query": "lantern", "collection": "wiki", "filters": {"doc_id": "same"}}
        r = c.post("/v1/search", json=body, headers=w.headers(tenant))
        return [x["text"] for x in r.json()["results"]]

    acme_text = "The acme crew polished the lantern in the orchard."
    assert ingest("acme", acme_text)["added"] == 1
    assert ingest("globex", "The globex crew hung the lantern on the bridge.")["added"] == 1
    ids = {point_id("same", 0, "acme"), point_id("same", 0, "globex")}
    assert len(ids) == 2 and ids <= set(w.index.point_ids("wiki"))
    assert same_text("acme") == [acme_text]
    assert same_text("globex") == ["The globex crew hung the lantern on the bridge."]
    assert same_text("initech") == []
    # globex changes its copy; acme's is still current (unchanged, not re-written or lost).
    assert ingest("globex", "The globex crew sold the lantern at the market.")["updated"] == 1
    assert ingest("acme", acme_text)["unchanged"] == 1
    assert same_text("acme") == [acme_text]
    assert same_text("globex") == ["The globex crew sold the lantern at the market."]


# -- scopes and revocation -----------------------------------------------------------------------
def test_read_only_key_is_403_on_writes_and_revoked_key_is_401(small_world: World) -> None:
    w = small_world
    reader, record = w.store.create("acme", {"read"}, name="dashboard")
    doc = {"id": "new", "text": "The acme crew counted the pebble."}
    search = {"query": "pebble", "collection": "kb"}

    r = w.client.post("/v1/ingest?wait=true", json={"documents": [doc]}, headers=bearer(reader))
    assert r.status_code == 403 and "'ingest' scope" in r.json()["detail"]
    r = w.client.post("/v1/delete", json={"doc_ids": ["doc-0"]}, headers=bearer(reader))
    assert r.status_code == 403
    assert own_ids(w, "acme", "kb", doc_id="doc-0") == [point_id("doc-0", 0, "acme")]
    r = w.client.post("/v1/search", json=search, headers=bearer(reader))
    assert r.status_code == 200 and r.json()["results"]
    assert {x["metadata"]["owner"] for x in r.json()["results"]} == {"acme"}

    assert w.store.revoke(record.prefix)
    r = w.client.post("/v1/search", json=search, headers=bearer(reader))
    assert r.status_code == 401 and "unknown or revoked" in r.json()["detail"]
    # The tenant's other key is unaffected; revoking it too stops it at once.
    assert w.client.post("/v1/search", json=search, headers=w.headers("acme")).status_code == 200
    (writer,) = [k for k in w.store.list() if k.tenant == "acme" and k.active]
    assert w.store.revoke(writer.prefix)
    r = w.client.post("/v1/ingest?wait=true", json={"documents": [doc]}, headers=w.headers("acme"))
    assert r.status_code == 401


# -- point ids cannot be forged across tenants -------------------------------------------------
def test_default_tenant_cannot_overwrite_another_tenants_chunk(small_world: World) -> None:
    """The default tenant's ids have no tenant in them (older collections keep their ids); a
    doc id crafted to look like another tenant's key must still map to a different point."""
    w = small_world
    intruder, _ = w.store.create("default", {"read", "ingest"})
    victim = point_id("doc-2", 0, "acme")
    assert victim != point_id("acme\x1fdoc-2", 0, "default")
    assert victim != point_id('["acme", "doc-2", 0]', 0, "default")
    doc = {"id": "acme\x1fdoc-2", "text": "The default crew overwrote this chunk."}
    r = w.client.post(
        "/v1/ingest?wait=true",
        json={"collection": "kb", "documents": [doc]},
        headers=bearer(intruder),
    )
    assert r.status_code in (200, 422), r.text
    assert own_ids(w, "acme", "kb", doc_id="doc-2") == [victim]
