"""Embedded index: Qdrant Edge shards on local disk, the real Qdrant engine in-process.

Layout under the data directory::

    <data_dir>/grounded.lock                    held by the one process that owns the shards
    <data_dir>/collections/<name>/manifest.json model, dimension, BM25 and chunking settings
    <data_dir>/collections/<name>/shard/        the Qdrant Edge shard (segments + WAL)

Only one process may own an Edge shard, so :class:`EdgeIndex` takes an exclusive lock on the data
directory when it opens and keeps it until :meth:`close`. A second process fails fast with
:class:`DataDirLocked`, which names the owner and tells how to go through it instead.

Example::

    index = EdgeIndex(Path("data"))  # or EdgeIndex(Path("data"), tuning=IndexTuning(m=32))
    index.create_collection("docs", manifest)
    hits = index.search("docs", SearchQuery(dense=vec, sparse=None, mode="dense"))
    index.close()
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import shutil
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import qdrant_edge as qe

from ..names import check_collection
from ..payload import INTEGER_FIELDS, KEYWORD_FIELDS, TENANT
from .base import (
    DEFAULT_FULL_SCAN_THRESHOLD_KB,
    DENSE,
    INT8_QUANTILE,
    SPARSE,
    CollectionNotFound,
    Dialect,
    IndexPoint,
    IndexProblem,
    IndexTuning,
    Manifest,
    QdrantAdapter,
    QueryPlan,
    scroll_all,
)

_SCROLL_PAGE = 1024


class DataDirLocked(IndexProblem):
    """Another process (usually ``grounded serve``) owns this data directory."""

    def __init__(self, data_dir: Path, owner: str) -> None:
        super().__init__(
            f"data directory {data_dir} is in use by another grounded process ({owner}). "
            "Only one process may own an embedded Qdrant Edge shard. If `grounded serve` is "
            "running, go through it: `grounded ingest ... --server http://HOST:PORT` (or "
            "`grounded search ... --server ...`); otherwise stop that process first."
        )
        self.data_dir = data_dir
        self.owner = owner

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:  # raised again across a process
        return type(self), (self.data_dir, self.owner)


def _this_process() -> str:
    """Who holds the lock, as a user looking for the process would want it: a child process
    (the one a ``ProcessIndex`` serves the index from) names its parent too, the one started."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return f"pid {os.getpid()}"
    return f"pid {os.getpid()}, child of pid {parent.pid}"


class DataDirLock:
    """An exclusive ``flock`` on ``<data_dir>/grounded.lock``, released when the process dies."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "grounded.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown process"
            handle.close()
            raise DataDirLocked(self.path.parent, owner) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{_this_process()}: {' '.join(sys.argv[:3])}")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


# Qdrant Edge takes positional keys and vectors, and ``using`` inside the nearest query.
_EDGE: Dialect[qe.Filter] = Dialect(
    match_value=lambda key, value: qe.FieldCondition(key, match=qe.MatchValue(value)),
    match_any=lambda key, values: qe.FieldCondition(key, match=qe.MatchAny(values)),
    match_range=lambda key, bounds: qe.FieldCondition(key, range=qe.RangeFloat(**bounds)),
    filter=lambda must, must_not: qe.Filter(must=must, must_not=must_not),
    sparse_vector=lambda vec: qe.SparseVector(vec.indices, vec.values),
    nearest=lambda using, vector: qe.Query.Nearest(vector, using=using),
    rrf=lambda rrf: qe.Fusion.Rrf(k=rrf.k, weights=rrf.weights),
    dbsf=qe.Fusion.Dbsf,
)


def edge_vector_params(dimension: int, tuning: IndexTuning) -> qe.EdgeVectorParams:
    """The dense vector of a new shard: cosine, with the tuning's HNSW graph and int8 copy."""
    hnsw = tuning.hnsw
    return qe.EdgeVectorParams(
        size=dimension,
        distance=qe.Distance.Cosine,
        hnsw_config=qe.HnswIndexConfig(*hnsw, DEFAULT_FULL_SCAN_THRESHOLD_KB) if hnsw else None,
        quantization_config=qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=INT8_QUANTILE)
        if tuning.int8
        else None,
    )


def edge_search_params(tuning: IndexTuning, exact: bool) -> qe.SearchParams | None:
    params = tuning.search_params(exact)
    if params is None:
        return None
    quantization = params.pop("quantization", None)
    return qe.SearchParams(
        **params,
        quantization=qe.QuantizationSearchParams(**quantization) if quantization else None,
    )


class EdgeIndex(QdrantAdapter[qe.Filter]):
    """:class:`~ingest.index.base.VectorIndex` over Qdrant Edge shards in ``data_dir``.

    ``tuning`` (:class:`~ingest.index.base.IndexTuning`) shapes the HNSW graph and int8
    quantization of collections created here, and the search parameters of every query.
    """

    dialect = _EDGE

    def __init__(self, data_dir: Path, tuning: IndexTuning | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.tuning = tuning or IndexTuning()
        self._lock = DataDirLock(self.data_dir)
        self._lock.acquire()
        self._root = self.data_dir / "collections"
        self._root.mkdir(parents=True, exist_ok=True)
        self._shards: dict[str, qe.EdgeShard] = {}
        self._manifests: dict[str, Manifest] = {}
        self._guard = threading.RLock()

    # collections -------------------------------------------------------------------------
    def _folder(self, collection: str) -> Path:
        return self._root / check_collection(collection)

    def list_collections(self) -> list[str]:
        return sorted(p.parent.name for p in self._root.glob("*/manifest.json"))

    def manifest(self, collection: str) -> Manifest | None:
        if collection in self._manifests:
            return self._manifests[collection]
        path = self._folder(collection) / "manifest.json"
        if not path.is_file():
            return None
        manifest = Manifest.from_dict(json.loads(path.read_text()))
        self._manifests[collection] = manifest
        return manifest

    def create_collection(self, collection: str, manifest: Manifest) -> None:
        with self._guard:
            folder = self._folder(collection)
            if (folder / "manifest.json").exists():
                raise IndexProblem(f"collection {collection!r} already exists")
            config = qe.EdgeConfig(
                vectors={DENSE: edge_vector_params(manifest.dimension, self.tuning)},
                sparse_vectors={
                    SPARSE: qe.EdgeSparseVectorParams(
                        modifier=qe.Modifier.Idf, full_scan_threshold=self.tuning.sparse_full_scan
                    )
                },
            )
            if (folder / "shard").exists():  # left by a crash before the manifest was written
                shutil.rmtree(folder / "shard")
            shard = qe.EdgeShard.create(str(folder / "shard"), config)
            for name in KEYWORD_FIELDS:
                shard.update(
                    qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Keyword)
                )
            for name in INTEGER_FIELDS:
                shard.update(
                    qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Integer)
                )
            shard.update(
                qe.UpdateOperation.create_field_index(TENANT, qe.KeywordIndexParams(is_tenant=True))
            )
            shard.flush()
            # The manifest is written last: a collection without one does not exist.
            tmp = folder / "manifest.json.tmp"
            tmp.write_text(json.dumps(manifest.to_dict(), indent=2))
            tmp.replace(folder / "manifest.json")
            self._shards[collection] = shard
            self._manifests[collection] = manifest

    def drop_collection(self, collection: str) -> None:
        folder = self._folder(collection)
        with self._guard:
            shard = self._shards.pop(collection, None)
            if shard is not None:
                shard.close()
            self._manifests.pop(collection, None)
            # The manifest goes first: a half-removed folder is then no collection at all.
            (folder / "manifest.json").unlink(missing_ok=True)
            shutil.rmtree(folder, ignore_errors=True)

    def _shard(self, collection: str) -> qe.EdgeShard:
        shard = self._shards.get(collection)
        if shard is not None:
            return shard
        with self._guard:
            if collection not in self._shards:
                if self.manifest(collection) is None:
                    raise CollectionNotFound(collection)
                try:
                    shard = qe.EdgeShard.load(str(self._folder(collection) / "shard"))
                except Exception as exc:  # the engine raises a bare Exception
                    raise IndexProblem(
                        f"collection {collection!r} cannot be loaded ({exc}). If its last write "
                        "holds a payload the engine cannot decode, restore it from a backup or "
                        f"drop it (`grounded collections drop {collection}`) and re-ingest."
                    ) from None
                self._shards[collection] = shard
            return self._shards[collection]

    # SDK calls ---------------------------------------------------------------------------
    def _upsert(self, collection: str, points: Sequence[IndexPoint]) -> None:
        batch = [qe.Point(p.id, _EDGE.vectors(p), p.payload) for p in points]
        self._shard(collection).update(qe.UpdateOperation.upsert_points(batch))

    def _delete_where(self, collection: str, filters: Sequence[qe.Filter]) -> None:
        shard = self._shard(collection)
        for flt in filters:
            shard.update(qe.UpdateOperation.delete_points_by_filter(flt))

    def _delete_ids(self, collection: str, ids: list[str]) -> None:
        self._shard(collection).update(qe.UpdateOperation.delete_points(list(ids)))

    def _set_payload(self, collection: str, ids: list[str], payload: dict[str, Any]) -> None:
        self._shard(collection).update(qe.UpdateOperation.set_payload(list(ids), payload))

    def _scroll(
        self, collection: str, flt: qe.Filter | None, fields: list[str] | None
    ) -> list[Any]:
        shard = self._shard(collection)
        return scroll_all(
            lambda offset: shard.scroll(
                qe.ScrollRequest(
                    offset=offset,
                    limit=_SCROLL_PAGE,
                    filter=flt,
                    with_payload=qe.PayloadSelector.Include(fields) if fields else False,
                    with_vector=False,
                )
            )
        )

    def _count(self, collection: str, flt: qe.Filter | None) -> int:
        return int(self._shard(collection).count(qe.CountRequest(exact=True, filter=flt)))

    def _retrieve(self, collection: str, ids: list[str]) -> list[Any]:
        return list(
            self._shard(collection).retrieve(list(ids), with_payload=True, with_vector=False)
        )

    def _query(self, collection: str, plan: QueryPlan) -> list[Any]:
        params = edge_search_params(self.tuning, plan.exact)
        prefetches = [
            qe.Prefetch(
                limit=p.limit,
                query=_EDGE.query(p.query),
                filter=_EDGE.filter_of(p.conditions),
                params=params,
            )
            for p in plan.prefetches
        ]
        request = qe.QueryRequest(
            limit=plan.limit,
            prefetches=prefetches or None,
            query=_EDGE.query(plan.query),
            filter=_EDGE.filter_of(plan.conditions),
            with_payload=True,
            with_vector=plan.with_vector,
            params=params,
        )
        return list(self._shard(collection).query(request))

    def _scroll_page(
        self, collection: str, offset: str | None, limit: int
    ) -> tuple[Sequence[Any], Any]:
        return self._shard(collection).scroll(
            qe.ScrollRequest(offset=offset, limit=limit, with_payload=True, with_vector=True)
        )

    @contextmanager
    def bulk_load(self, collection: str) -> Iterator[None]:
        """Nothing to defer: an Edge shard runs no optimizer in the background and builds its
        HNSW graph only when :meth:`flush` calls ``optimize()``, so a bulk load into it already
        builds the graph once, at the end."""
        self._shard(collection)  # a missing collection fails here, as on the server
        yield

    def flush(self, collection: str) -> None:
        shard = self._shard(collection)
        shard.flush()
        shard.optimize()

    def close(self) -> None:
        with self._guard:
            for shard in self._shards.values():
                shard.flush()
                shard.close()
            self._shards.clear()
            self._lock.release()
