"""HNSW and int8 quantization from settings (:class:`IndexTuning`), honoured by both adapters.

Unset settings keep today's behaviour (nothing extra is sent to either engine). On Qdrant Edge
the effects are observed in the engine itself: a tiny graph searched with ``hnsw_ef=1`` loses
neighbours that exact search finds, and int8 scores without re-scoring differ from the float
cosine while re-scored ones do not. qdrant-client's local mode searches exactly and ignores
collection parameters, so on that adapter a spy records what is asked of the client.
"""

from __future__ import annotations

import inspect
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from ingest.index import (
    EdgeIndex,
    FieldFilter,
    IndexPoint,
    IndexTuning,
    Manifest,
    SearchQuery,
    VectorIndex,
    open_index,
)
from ingest.index.server import ServerIndex
from ingest.settings import Settings
from ingest.sparse import Bm25Params, SparseVec

TUNED = IndexTuning(
    m=8,
    ef_construct=32,
    quantization="int8",
    hnsw_ef=48,
    rescore=True,
    oversampling=2.0,
    sparse_full_scan=20_000,
)


def _manifest(dimension: int) -> Manifest:
    return Manifest("test-model", dimension, Bm25Params(avg_len=4), "test")


def _points(vectors: np.ndarray) -> list[IndexPoint]:
    return [
        IndexPoint(
            str(uuid.UUID(int=i + 1)),
            vec,
            SparseVec([i % 97, 1000 + i % 13], [1.0, 0.5]),
            {"tenant": "default", "doc_id": f"d{i}", "chunk_index": i % 4, "source": f"s{i % 3}"},
        )
        for i, vec in enumerate(vectors)
    ]


def _unit(rows: int, dimension: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(rows, dimension)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class RecordingClient:
    """A real local-mode QdrantClient whose public methods record their keyword arguments."""

    def __init__(self) -> None:
        self.client = QdrantClient(":memory:")
        self.calls: list[tuple[str, dict[str, Any]]] = []
        for name in dir(QdrantClient):
            if not name.startswith("_") and inspect.isfunction(getattr(QdrantClient, name)):
                setattr(self.client, name, self._recorder(name, getattr(self.client, name)))

    def _recorder(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def record(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, kwargs))
            return method(*args, **kwargs)

        return record

    def kwargs_of(self, name: str) -> list[dict[str, Any]]:
        return [kwargs for called, kwargs in self.calls if called == name]


# settings -----------------------------------------------------------------------------------
def test_default_settings_keep_qdrants_defaults_but_bm25s_full_scan() -> None:
    tuning = IndexTuning.from_settings(Settings())
    # BM25's full-scan threshold is grounded's own default (docs/scaling.md); the rest, Qdrant's.
    assert tuning == IndexTuning(sparse_full_scan=20_000)
    assert IndexTuning.from_settings(Settings(sparse_full_scan_threshold=None)) == IndexTuning()
    assert tuning.hnsw is None and not tuning.int8
    assert tuning.search_params(exact=False) is None
    assert tuning.search_params(exact=True) == {"exact": True}


def test_settings_become_the_tuning() -> None:
    settings = Settings(
        hnsw_m=8,
        hnsw_ef_construct=32,
        hnsw_ef=48,
        quantization="int8",
        quantization_rescore=True,
        quantization_oversampling=2.0,
        sparse_full_scan_threshold=20_000,
    )
    assert IndexTuning.from_settings(settings) == TUNED
    assert TUNED.hnsw == (8, 32)
    assert TUNED.search_params(exact=False) == {
        "hnsw_ef": 48,
        "quantization": {"rescore": True, "oversampling": 2.0},
    }
    # Setting only one of the two graph parameters keeps Qdrant's default for the other.
    assert IndexTuning(m=32).hnsw == (32, 100)
    assert IndexTuning(ef_construct=200).hnsw == (16, 200)


@pytest.mark.parametrize(
    "bad",
    [
        {"hnsw_m": 2},
        {"hnsw_ef_construct": 0},
        {"hnsw_ef": 0},
        {"quantization": "int4"},
        {"quantization_oversampling": 0.5},
        {"sparse_full_scan_threshold": 0},
    ],
)
def test_bad_tuning_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Settings(**bad)


def test_bad_tuning_is_refused_without_settings() -> None:
    with pytest.raises(ValueError, match="hnsw_ef"):
        IndexTuning(hnsw_ef=0)
    with pytest.raises(ValueError, match="oversampling"):
        IndexTuning(oversampling=0.9)


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
def test_open_index_hands_the_tuning_to_either_adapter(tmp_path: Path) -> None:
    tuning_settings: dict[str, Any] = {"hnsw_m": 8, "hnsw_ef": 48, "quantization": "int8"}
    edge = open_index(Settings(data_dir=tmp_path / "data", **tuning_settings))
    try:
        assert isinstance(edge, EdgeIndex)
        assert edge.tuning == IndexTuning(
            m=8, hnsw_ef=48, quantization="int8", sparse_full_scan=20_000
        )
    finally:
        edge.close()
    server = open_index(Settings(qdrant_url="http://127.0.0.1:1", **tuning_settings))
    assert isinstance(server, ServerIndex)
    assert server.tuning == IndexTuning(
        m=8, hnsw_ef=48, quantization="int8", sparse_full_scan=20_000
    )


# both adapters --------------------------------------------------------------------------------
@pytest.fixture(params=["edge", "server"])
def tuned(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorIndex]:
    idx: VectorIndex
    if request.param == "edge":
        idx = EdgeIndex(tmp_path / "edge", tuning=TUNED)
    else:
        idx = ServerIndex(QdrantClient(":memory:"), tuning=TUNED)
    yield idx
    idx.close()


@pytest.mark.parametrize("mode", ["hybrid", "dense", "sparse"])
def test_a_tuned_collection_answers_every_mode_with_filters(tuned: VectorIndex, mode: str) -> None:
    vectors = _unit(200, 16)
    tuned.create_collection("c", _manifest(16))
    tuned.upsert("c", _points(vectors))
    tuned.flush("c")
    # Point 5 is the query's own vector and term: first in every mode; the filter keeps it.
    query = SearchQuery(
        dense=vectors[5],
        sparse=SparseVec([5], [1.0]),
        mode=mode,  # type: ignore[arg-type]
        limit=3,
        filters=(FieldFilter("source", value="s2"),),
    )
    hits = tuned.search("c", query)
    assert hits[0].payload["doc_id"] == "d5"
    assert all(h.payload["source"] == "s2" for h in hits)
    exact = tuned.search("c", replace(query, exact=True))
    assert exact[0].payload["doc_id"] == "d5"


def test_the_server_adapter_creates_and_searches_with_the_tuning() -> None:
    spy = RecordingClient()
    index = ServerIndex(spy.client, tuning=TUNED)
    index.create_collection("c", _manifest(4))
    (created,) = spy.kwargs_of("create_collection")
    assert created["hnsw_config"] == qm.HnswConfigDiff(m=8, ef_construct=32)
    scalar = created["quantization_config"].scalar
    assert scalar.type == qm.ScalarType.INT8 and scalar.quantile == 0.99
    (bm25,) = created["sparse_vectors_config"].values()
    assert bm25 == qm.SparseVectorParams(
        index=qm.SparseIndexParams(full_scan_threshold=20_000), modifier=qm.Modifier.IDF
    )
    index.upsert("c", _points(_unit(4, 4)))
    index.search("c", SearchQuery(dense=[1, 0, 0, 0], sparse=SparseVec([1], [1.0]), exact=True))
    (queried,) = spy.kwargs_of("query_points")
    expected = qm.SearchParams(
        hnsw_ef=48,
        exact=True,
        quantization=qm.QuantizationSearchParams(rescore=True, oversampling=2.0),
    )
    # A hybrid query's legs are prefetches: each carries the parameters too.
    assert queried["search_params"] == expected
    assert [p.params for p in queried["prefetch"]] == [expected, expected]


def test_the_server_adapter_sends_nothing_when_untuned() -> None:
    spy = RecordingClient()
    index = ServerIndex(spy.client)
    index.create_collection("c", _manifest(4))
    (created,) = spy.kwargs_of("create_collection")
    assert "hnsw_config" not in created and "quantization_config" not in created
    (bm25,) = created["sparse_vectors_config"].values()
    assert bm25 == qm.SparseVectorParams(modifier=qm.Modifier.IDF)
    index.upsert("c", _points(_unit(4, 4)))
    index.search("c", SearchQuery(dense=[1, 0, 0, 0], sparse=None, mode="dense"))
    (queried,) = spy.kwargs_of("query_points")
    assert queried["search_params"] is None


# Qdrant Edge: the engine's own behaviour ----------------------------------------------------
# 11,000 x 256 floats is ~11 MB, above Qdrant's 10 MB full-scan threshold: searches go through
# the HNSW graph and its int8 copy instead of scanning every vector.
ROWS, DIM = 11_000, 256


@pytest.fixture(scope="module")
def edge_vectors() -> np.ndarray:
    return _unit(ROWS, DIM, seed=1)


def _queries(vectors: np.ndarray, n: int = 20) -> np.ndarray:
    rng = np.random.default_rng(2)
    q = vectors[:n] * 0.5 + vectors[n : 2 * n] * 0.5 + rng.normal(0, 0.02, (n, DIM))
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def _filled_edge(path: Path, tuning: IndexTuning, vectors: np.ndarray) -> EdgeIndex:
    index = EdgeIndex(path, tuning)
    index.create_collection("c", _manifest(DIM))
    points = _points(vectors)
    for start in range(0, len(points), 2048):
        index.upsert("c", points[start : start + 2048])
    index.flush("c")  # builds the graph and the int8 copy
    return index


def _recall(index: EdgeIndex, queries: np.ndarray) -> float:
    found = []
    for q in queries:
        approx = {h.id for h in index.search("c", SearchQuery(q, None, "dense", limit=10))}
        exact = {h.id for h in index.search("c", SearchQuery(q, None, "dense", exact=True))}
        found.append(len(approx & exact) / 10)
    return float(np.mean(found))


def test_edge_builds_and_searches_the_graph_it_is_told_to(
    tmp_path: Path, edge_vectors: np.ndarray
) -> None:
    queries = _queries(edge_vectors)
    index = _filled_edge(tmp_path / "tiny", IndexTuning(m=4, ef_construct=8), edge_vectors)
    try:
        wide = _recall(index, queries)  # search ef unset: the collection's ef_construct, 8
        index.tuning = IndexTuning(hnsw_ef=400)  # a search-time setting: the next query has it
        wider = _recall(index, queries)
    finally:
        index.close()
    # A graph of 4 links searched with ef 400 finds much more than the same graph with ef 8.
    assert wider > wide + 0.2, (wide, wider)


def _score_error(index: EdgeIndex, vectors: np.ndarray, queries: np.ndarray) -> float:
    """The largest gap between a hit's score and its float cosine to the query."""
    errors = []
    for q in queries:
        for hit in index.search("c", SearchQuery(q, None, "dense", limit=5)):
            row = int(hit.payload["doc_id"][1:])
            errors.append(abs(hit.score - float(vectors[row] @ q)))
    return max(errors)


def test_edge_int8_scores_are_quantized_unless_rescored(
    tmp_path: Path, edge_vectors: np.ndarray
) -> None:
    queries = _queries(edge_vectors, 10)
    index = _filled_edge(
        tmp_path / "int8", IndexTuning(quantization="int8", rescore=False), edge_vectors
    )
    try:
        quantized = _score_error(index, edge_vectors, queries)
        index.tuning = IndexTuning(rescore=True)
        rescored = _score_error(index, edge_vectors, queries)
        index.tuning = IndexTuning(ignore_quantization=True)
        ignored = _score_error(index, edge_vectors, queries)
    finally:
        index.close()
    assert quantized > 1e-3, quantized  # int8 buckets: scores off in the third decimal
    assert rescored < 1e-5 and ignored < 1e-5, (rescored, ignored)
    # Reopened by an index that names no quantization: the int8 copy belongs to the stored
    # collection, not to whoever opens it.
    reopened = EdgeIndex(tmp_path / "int8", IndexTuning(rescore=False))
    try:
        assert _score_error(reopened, edge_vectors, queries) > 1e-3
    finally:
        reopened.close()


def _sparse_filtered_hits(index: EdgeIndex, terms: list[int]) -> list[tuple[str, float]]:
    query = SearchQuery(None, SparseVec(terms, [1.0] * len(terms)), "sparse", limit=20)
    query = replace(query, filters=(FieldFilter("source", value="s1"),))
    return [(h.id, round(h.score, 5)) for h in index.search("c", query)]


def test_edge_bm25_full_scan_threshold_is_the_collections_and_changes_no_result(
    tmp_path: Path,
) -> None:
    """Below the threshold a filtered BM25 search scores the filtered points one by one; above
    it, it walks posting lists. The two paths must rank alike; the threshold is stored with the
    collection, like the graph."""
    points = [
        replace(p, sparse=SparseVec(p.sparse.indices, [1.0 + i / 3_000, 0.5 + (i % 89) / 100]))
        for i, p in enumerate(_points(_unit(3_000, DIM, seed=3)))
    ]  # distinct weights: no ties, so the two paths' rankings compare exactly
    hits = {}
    for name, threshold in (("postings", 1), ("scan", 1_000_000)):
        index = EdgeIndex(tmp_path / name, IndexTuning(sparse_full_scan=threshold))
        index.create_collection("c", _manifest(DIM))
        index.upsert("c", points)
        index.flush("c")
        try:
            hits[name] = [_sparse_filtered_hits(index, [t, 1000 + t % 13]) for t in range(0, 97, 7)]
        finally:
            index.close()
        reopened = EdgeIndex(tmp_path / name)  # names no threshold: the stored one stays
        try:
            stored = json.loads(
                (tmp_path / name / "collections/c/shard/edge_config.json").read_text()
            )
            assert stored["sparse_vectors"]["bm25"]["full_scan_threshold"] == threshold
            assert [
                _sparse_filtered_hits(reopened, [t, 1000 + t % 13]) for t in range(0, 97, 7)
            ] == hits[name]
        finally:
            reopened.close()
    assert hits["postings"] == hits["scan"]
    assert all(hits["scan"]), "every query should match some filtered points"
