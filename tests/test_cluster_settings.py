"""Collections on a Qdrant server or cluster: cluster layout from settings, payload indexes before
any point, HNSW deferred during bulk loads, exact search on request.

qdrant-client's local mode accepts but ignores shard parameters and HNSW updates, so these tests
record what :class:`ServerIndex` asks of the client (a spy around a real local-mode client).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from ingest.index import (
    CollectionNotFound,
    EdgeIndex,
    IndexPoint,
    Manifest,
    SearchQuery,
    open_index,
)
from ingest.index.base import QueryPlan
from ingest.index.server import DEFAULT_HNSW_M, ClusterParams, ServerIndex
from ingest.payload import INTEGER_FIELDS, KEYWORD_FIELDS, TENANT
from ingest.settings import Settings
from ingest.sparse import Bm25Params, SparseVec

CLUSTER_KEYS = ("shard_number", "replication_factor", "write_consistency_factor", "on_disk_payload")
MANIFEST = Manifest("test-model", 4, Bm25Params(), "test")


class RecordingClient:
    """A real QdrantClient whose public methods record the name, positional and keyword arguments
    of each call (each wrapped on the instance; QdrantClient's methods do not call each other)."""

    def __init__(self, client: QdrantClient) -> None:
        self.client = client
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        for name in dir(QdrantClient):
            if not name.startswith("_") and inspect.isfunction(getattr(QdrantClient, name)):
                setattr(client, name, self._recorder(name, getattr(client, name)))

    def _recorder(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def record(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            return method(*args, **kwargs)

        return record

    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]

    def kwargs_of(self, name: str) -> list[dict[str, Any]]:
        return [kwargs for called, _, kwargs in self.calls if called == name]


@pytest.fixture
def spy() -> RecordingClient:
    return RecordingClient(QdrantClient(":memory:"))


def _server(spy: RecordingClient, cluster: ClusterParams | None = None) -> ServerIndex:
    return ServerIndex(spy.client, cluster)


def _points(n: int) -> list[IndexPoint]:
    return [
        IndexPoint(
            f"00000000-0000-0000-0000-{i:012d}",
            [1.0, float(i), 0.0, 0.5],
            SparseVec([i], [1.0]),
            {TENANT: "default", "doc_id": f"d{i}", "chunk_index": 0, "text": f"t{i}"},
        )
        for i in range(n)
    ]


def _cluster_kwargs(spy: RecordingClient) -> dict[str, Any]:
    (created,) = spy.kwargs_of("create_collection")
    return {key: created[key] for key in CLUSTER_KEYS if key in created}


# cluster parameters at creation --------------------------------------------------------------
def test_create_collection_passes_the_cluster_settings(spy: RecordingClient) -> None:
    settings = Settings(
        qdrant_shard_number=6, qdrant_replication_factor=2, qdrant_write_consistency_factor=1
    )
    _server(spy, ClusterParams.from_settings(settings)).create_collection("c", MANIFEST)
    assert _cluster_kwargs(spy) == {
        "shard_number": 6,
        "replication_factor": 2,
        "write_consistency_factor": 1,
        "on_disk_payload": True,
    }


def test_unset_cluster_settings_are_not_sent(spy: RecordingClient) -> None:
    _server(spy, ClusterParams.from_settings(Settings())).create_collection("c", MANIFEST)
    assert _cluster_kwargs(spy) == {"on_disk_payload": True}  # the only one with a default


def test_a_plain_server_index_leaves_every_default_to_the_server(spy: RecordingClient) -> None:
    _server(spy).create_collection("c", MANIFEST)
    assert _cluster_kwargs(spy) == {}
    assert ClusterParams(on_disk_payload=False).create_kwargs() == {"on_disk_payload": False}


def test_every_payload_index_is_created_before_the_first_point(spy: RecordingClient) -> None:
    index = _server(spy)
    index.create_collection("c", MANIFEST)
    index.upsert("c", _points(3))
    names = spy.names()
    first_upsert = names.index("upsert")
    indexed = [i for i, name in enumerate(names) if name == "create_payload_index"]
    assert indexed and max(indexed) < first_upsert
    assert names.index("create_collection") < min(indexed)
    schemas = {args[1]: args[2] for name, args, _ in spy.calls if name == "create_payload_index"}
    assert set(schemas) == {*KEYWORD_FIELDS, *INTEGER_FIELDS, TENANT}
    assert {"doc_id", TENANT} <= set(schemas)
    assert schemas[TENANT].is_tenant is True


def test_open_index_connects_with_the_timeout_and_cluster_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[dict[str, Any]] = []

    def fake_client(**kwargs: Any) -> QdrantClient:
        made.append(kwargs)
        return QdrantClient(":memory:")

    monkeypatch.setattr("ingest.index.server.QdrantClient", fake_client)
    settings = Settings(
        qdrant_url="http://qdrant:6333",
        qdrant_api_key="k",
        qdrant_timeout=7,
        qdrant_shard_number=3,
        qdrant_on_disk_payload=False,
    )
    index = open_index(settings)
    assert isinstance(index, ServerIndex)
    assert made == [{"url": "http://qdrant:6333", "api_key": "k", "timeout": 7}]
    assert index.cluster == ClusterParams(shard_number=3, on_disk_payload=False)
    index.close()


# bulk loads ---------------------------------------------------------------------------------
def _hnsw_updates(spy: RecordingClient) -> list[int | None]:
    return [kwargs["hnsw_config"].m for kwargs in spy.kwargs_of("update_collection")]


def test_bulk_load_sets_m_0_while_loading_and_restores_the_previous_m(
    spy: RecordingClient,
) -> None:
    index = _server(spy)
    index.create_collection("c", MANIFEST)
    with index.bulk_load("c"):
        assert _hnsw_updates(spy) == [0]
        index.upsert("c", _points(2))
    assert _hnsw_updates(spy) == [0, DEFAULT_HNSW_M]
    names = spy.names()
    assert names.index("update_collection") < names.index("upsert")
    assert max(i for i, n in enumerate(names) if n == "update_collection") > names.index("upsert")


def _with_m(spy: RecordingClient, m: int) -> Callable[..., Any]:
    """``get_collection`` answering an HNSW ``m`` (local mode always answers 16)."""
    real = spy.client.get_collection

    def get_collection(name: str) -> Any:
        info = real(name)
        hnsw = SimpleNamespace(m=m)
        return SimpleNamespace(
            config=SimpleNamespace(hnsw_config=hnsw, metadata=info.config.metadata)
        )

    return get_collection


@pytest.mark.parametrize(("before", "restored"), [(32, 32), (0, DEFAULT_HNSW_M)])
def test_bulk_load_restores_even_when_the_load_fails(
    spy: RecordingClient, monkeypatch: pytest.MonkeyPatch, before: int, restored: int
) -> None:
    index = _server(spy)
    index.create_collection("c", MANIFEST)
    monkeypatch.setattr(spy.client, "get_collection", _with_m(spy, before))
    with pytest.raises(RuntimeError, match="boom"), index.bulk_load("c"):
        raise RuntimeError("boom")
    # m=0 found before the load (an earlier one died mid-way) restores Qdrant's default, not 0
    assert _hnsw_updates(spy) == [0, restored]


def test_bulk_load_of_a_missing_collection_fails_before_touching_it(spy: RecordingClient) -> None:
    with pytest.raises(CollectionNotFound), _server(spy).bulk_load("nope"):
        pass
    assert "update_collection" not in spy.names()


def test_edge_bulk_load_is_a_no_op_that_still_checks_the_collection(tmp_path: Path) -> None:
    edge = EdgeIndex(tmp_path / "edge")
    try:
        edge.create_collection("c", MANIFEST)
        with edge.bulk_load("c"):
            edge.upsert("c", _points(2))
        assert edge.count("c") == 2
        with pytest.raises(CollectionNotFound), edge.bulk_load("nope"):
            pass
    finally:
        edge.close()


# exact search -------------------------------------------------------------------------------
def test_exact_search_is_planned_and_sent_only_when_asked(spy: RecordingClient) -> None:
    index = _server(spy)
    index.create_collection("c", MANIFEST)
    index.upsert("c", _points(3))
    query = SearchQuery(dense=[1.0, 0.0, 0.0, 0.5], sparse=SparseVec([1], [1.0]), mode="dense")
    assert QueryPlan.of(query).exact is False
    index.search("c", query)
    with warnings.catch_warnings():  # local mode is always exact and says so (once a process)
        warnings.simplefilter("ignore", UserWarning)
        index.search("c", replace(query, exact=True))
    assert QueryPlan.of(replace(query, mode="hybrid", exact=True)).exact is True
    sent = [kwargs["search_params"] for kwargs in spy.kwargs_of("query_points")]
    assert sent == [None, qm.SearchParams(exact=True)]


def test_edge_exact_search_finds_what_hnsw_finds(tmp_path: Path) -> None:
    edge = EdgeIndex(tmp_path / "edge")
    try:
        edge.create_collection("c", MANIFEST)
        edge.upsert("c", _points(5))
        query = SearchQuery(dense=[1.0, 2.0, 0.0, 0.5], sparse=SparseVec([2], [1.0]))
        for mode in ("dense", "hybrid"):
            plain = replace(query, mode=mode)
            exact = replace(plain, exact=True)
            assert [h.id for h in edge.search("c", exact)] == [
                h.id for h in edge.search("c", plain)
            ]
    finally:
        edge.close()
