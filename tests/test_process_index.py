"""ProcessIndex (ingest/index/process.py): an index served from a process of its own. The index
protocol's own tests run against it through the ``index`` fixture (conftest.py); these cover
what only a second process brings: errors that cross it, a child that dies, a parent that goes
away, and when ``grounded ingest`` uses it."""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from ingest.build import open_ingest_index
from ingest.embedding import SentenceTransformerEmbedder
from ingest.index import (
    CollectionNotFound,
    DataDirLocked,
    EdgeIndex,
    IndexPoint,
    IndexProblem,
    Manifest,
    open_index,
)
from ingest.index.process import IndexProcessGone, ProcessIndex
from ingest.settings import Settings
from ingest.sparse import Bm25Params, SparseVec


class _Picky(Exception):
    """An exception that pickle cannot rebuild (its __init__ wants two arguments)."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(f"{why} (code {code})")


class _RefusingIndex(EdgeIndex):
    def count(self, collection: str, tenant: str | None = None) -> int:
        raise _Picky(7, "the engine said no")

    def point_ids(self, collection: str) -> list[str]:
        raise IndexProblem("a problem meant for the user")

    def flush(self, collection: str) -> None:
        time.sleep(1.5)  # long enough to be cut short
        super().flush(collection)


def _points(n: int) -> list[IndexPoint]:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, 8)).astype(np.float32)
    return [
        IndexPoint(
            f"00000000-0000-0000-0000-{i:012d}",
            v / np.linalg.norm(v),
            SparseVec([i], [1.0]),
            {"tenant": "default", "doc_id": f"d{i}", "chunk_index": 0, "text": f"text {i}"},
        )
        for i, v in enumerate(vectors)
    ]


def _fill(index: Any, n: int = 20) -> None:
    index.create_collection("c", Manifest("m", 8, Bm25Params(avg_len=4), "test"))
    with index.bulk_load("c"):
        index.upsert("c", _points(n))


def test_errors_cross_the_process_boundary_with_their_kind_and_message(tmp_path: Path) -> None:
    index = ProcessIndex(partial(_RefusingIndex, tmp_path / "data"))
    try:
        with pytest.raises(CollectionNotFound, match="collection 'nope' does not exist") as info:
            index.document_sources("nope")
        assert info.value.name == "nope"
        with pytest.raises(CollectionNotFound), index.bulk_load("nope"):
            pass
        _fill(index)
        # An exception pickle cannot rebuild arrives as the nearest kind, message intact.
        with pytest.raises(RuntimeError, match=r"the engine said no \(code 7\)") as picky:
            index.count("c")
        assert "in count" in str(picky.value.__cause__)  # the child's traceback comes along
        with pytest.raises(IndexProblem, match="a problem meant for the user"):
            index.point_ids("c")
        # An argument that does not pickle fails here, before anything is sent.
        with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
            index.delete_points("c", [lambda: "id"])  # type: ignore[list-item]
        assert len(index.payloads("c", [p.id for p in _points(3)])) == 3  # still serving
    finally:
        index.close()
    # The data directory's lock was the child's, and it went with it.
    reopened = EdgeIndex(tmp_path / "data")
    assert reopened.count("c") == 20
    # Opening is in the child too: a directory another process owns is refused here.
    with pytest.raises(DataDirLocked, match="in use by another grounded process") as locked:
        ProcessIndex(partial(EdgeIndex, tmp_path / "data"))
    assert locked.value.owner
    reopened.close()


def test_a_child_that_dies_is_reported_not_waited_for(tmp_path: Path) -> None:
    index = ProcessIndex(partial(EdgeIndex, tmp_path / "data"))
    _fill(index)
    index._process.kill()
    with pytest.raises(IndexProcessGone, match="the index process exited"):
        index.count("c")
    with pytest.raises(IndexProcessGone, match="closed"):
        index.count("c")
    index.close()  # nothing left to close: no error, no wait


def test_a_call_cut_short_ends_the_connection_and_the_child_closes_in_order(
    tmp_path: Path,
) -> None:
    index = ProcessIndex(partial(_RefusingIndex, tmp_path / "data"))
    _fill(index, 30)

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(KeyboardInterrupt):
            index.flush("c")  # 1.5 s in the child: Ctrl-C arrives while this waits
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    # The unread answer must not become the next call's: the connection is over.
    with pytest.raises(IndexProcessGone, match="closed"):
        index.list_collections()
    index.close()  # waits for the child to finish and close the index
    assert index._process.exitcode == 0
    reopened = EdgeIndex(tmp_path / "data")
    assert reopened.count("c") == 30
    reopened.close()


def test_nested_bulk_loads_of_one_collection(tmp_path: Path) -> None:
    index = ProcessIndex(partial(EdgeIndex, tmp_path / "data"))
    try:
        _fill(index, 10)
        with index.bulk_load("c"), index.bulk_load("c"):
            index.upsert("c", _points(12))
        with index.bulk_load("c"):
            pass
        assert index.count("c") == 12
    finally:
        index.close()


def test_a_parent_that_goes_away_leaves_what_was_written(tmp_path: Path) -> None:
    index = ProcessIndex(partial(EdgeIndex, tmp_path / "data"))
    _fill(index, 50)
    # Meanwhile the lock names the child and the process it serves, the one a user knows.
    with pytest.raises(DataDirLocked) as locked:
        EdgeIndex(tmp_path / "data")
    assert locked.value.owner.startswith(f"pid {index._process.pid}, child of pid {os.getpid()}: ")
    index._conn.close()  # as when this process dies: the child reads EOF, not "close"
    index._process.join(30)
    assert index._process.exitcode == 0
    reopened = EdgeIndex(tmp_path / "data")  # lock released, points flushed
    assert reopened.count("c") == 50
    reopened.close()


def test_ingest_writes_from_a_process_when_settings_ask(
    embedder: SentenceTransformerEmbedder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def opened(setting: str, on: Any = embedder) -> Any:
        settings = Settings(data_dir=tmp_path / setting, ingest_index_process=setting)
        return open_ingest_index(settings, on, open_index(settings))

    assert not embedder.on_gpu  # so "auto" keeps the writes in this process
    for setting, kind in (("auto", EdgeIndex), ("off", EdgeIndex), ("on", ProcessIndex)):
        index = opened(setting)
        assert type(index) is kind
        index.close()
    index = opened("auto", SimpleNamespace(on_gpu=True))  # what decides is the embedder's on_gpu
    assert type(index) is ProcessIndex
    assert index.list_collections() == []  # the in-process index handed its lock to the child
    index.close()
    # A daemonic process (a Celery prefork worker) may not start one.
    monkeypatch.setattr(multiprocessing.current_process(), "daemon", True, raising=False)
    with caplog.at_level(logging.WARNING):
        index = opened("on")
    assert type(index) is EdgeIndex and "ingest_index_process ignored" in caplog.text
    index.close()
