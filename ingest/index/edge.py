"""Embedded index: Qdrant Edge shards on local disk, the real Qdrant engine in-process.

Layout under the data directory::

    <data_dir>/grounded.lock                    held by the one process that owns the shards
    <data_dir>/collections/<name>/manifest.json model, dimension, BM25 and chunking settings
    <data_dir>/collections/<name>/shard/        the Qdrant Edge shard (segments + WAL)

Only one process may own an Edge shard, so :class:`EdgeIndex` takes an exclusive lock on the data
directory when it opens and keeps it until :meth:`close`. A second process fails fast with
:class:`DataDirLocked`, which names the owner and tells how to go through it instead.

Example::

    index = EdgeIndex(Path("data"))
    index.create_collection("docs", manifest)
    hits = index.search("docs", SearchQuery(dense=vec, sparse=None, mode="dense"))
    index.close()
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import qdrant_edge as qe

from ..names import DEFAULT_TENANT, check_collection
from .base import (
    DENSE,
    INTEGER_FIELDS,
    KEYWORD_FIELDS,
    SPARSE,
    STATE_FIELDS,
    TENANT,
    CollectionNotFound,
    DocState,
    FieldFilter,
    Hit,
    IndexPoint,
    IndexProblem,
    Manifest,
    SearchQuery,
    docs_condition,
    states_from_payloads,
    tenant_condition,
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
        self.owner = owner


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
        handle.write(f"pid {os.getpid()}: {' '.join(sys.argv[:3])}")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class EdgeIndex:
    """:class:`~ingest.index.base.VectorIndex` over Qdrant Edge shards in ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
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
                vectors={
                    DENSE: qe.EdgeVectorParams(size=manifest.dimension, distance=qe.Distance.Cosine)
                },
                sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
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

    # writes ------------------------------------------------------------------------------
    def upsert(self, collection: str, points: Sequence[IndexPoint]) -> None:
        if not points:
            return
        batch = [
            qe.Point(
                p.id,
                {
                    DENSE: [float(x) for x in p.dense],
                    SPARSE: qe.SparseVector(p.sparse.indices, p.sparse.values),
                },
                p.payload,
            )
            for p in points
        ]
        self._shard(collection).update(qe.UpdateOperation.upsert_points(batch))

    def delete_documents(
        self, collection: str, doc_ids: Sequence[str], tenant: str = DEFAULT_TENANT
    ) -> None:
        if doc_ids:
            flt = _edge_filter([tenant_condition(tenant), docs_condition(doc_ids)])
            self._shard(collection).update(qe.UpdateOperation.delete_points_by_filter(flt))

    def delete_stale_chunks(
        self, collection: str, current: Mapping[str, str], tenant: str = DEFAULT_TENANT
    ) -> None:
        shard = self._shard(collection)
        for doc_id, doc_hash in current.items():
            stale = _edge_filter(
                [tenant_condition(tenant), FieldFilter("doc_id", value=doc_id)],
                must_not=[FieldFilter("doc_hash", value=doc_hash)],
            )
            shard.update(qe.UpdateOperation.delete_points_by_filter(stale))

    def delete_points(self, collection: str, ids: Sequence[str]) -> None:
        if ids:
            self._shard(collection).update(qe.UpdateOperation.delete_points(list(ids)))

    def set_tenant(self, collection: str, ids: Sequence[str], tenant: str) -> None:
        if ids:
            self._shard(collection).update(
                qe.UpdateOperation.set_payload(list(ids), {TENANT: tenant})
            )

    def flush(self, collection: str) -> None:
        shard = self._shard(collection)
        shard.flush()
        shard.optimize()

    # reads -------------------------------------------------------------------------------
    def _scroll(
        self, collection: str, flt: qe.Filter | None, fields: list[str] | None
    ) -> list[Any]:
        shard = self._shard(collection)
        records: list[Any] = []
        offset = None
        while True:
            page, offset = shard.scroll(
                qe.ScrollRequest(
                    offset=offset,
                    limit=_SCROLL_PAGE,
                    filter=flt,
                    with_payload=qe.PayloadSelector.Include(fields) if fields else False,
                    with_vector=False,
                )
            )
            records.extend(page)
            if offset is None:
                return records

    def document_states(
        self, collection: str, doc_ids: Sequence[str], tenant: str = DEFAULT_TENANT
    ) -> dict[str, DocState]:
        if not doc_ids:
            return {}
        flt = _edge_filter([tenant_condition(tenant), docs_condition(doc_ids)])
        return states_from_payloads(r.payload for r in self._scroll(collection, flt, STATE_FIELDS))

    def document_sources(self, collection: str, tenant: str = DEFAULT_TENANT) -> dict[str, str]:
        flt = _edge_filter([tenant_condition(tenant), FieldFilter("chunk_index", value=0)])
        return {
            str(r.payload["doc_id"]): str(r.payload.get("source", ""))
            for r in self._scroll(collection, flt, ["doc_id", "source"])
        }

    def count(self, collection: str, tenant: str | None = None) -> int:
        flt = _edge_filter([tenant_condition(tenant)]) if tenant is not None else None
        return int(self._shard(collection).count(qe.CountRequest(exact=True, filter=flt)))

    def point_ids(self, collection: str) -> list[str]:
        return [str(r.id) for r in self._scroll(collection, None, None)]

    def payloads(self, collection: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        records = self._shard(collection).retrieve(list(ids), with_payload=True, with_vector=False)
        return {str(r.id): dict(r.payload or {}) for r in records}

    def search(self, collection: str, query: SearchQuery) -> list[Hit]:
        shard = self._shard(collection)
        flt = _edge_filter(query.conditions)
        dense = (
            qe.Query.Nearest([float(x) for x in query.dense], using=DENSE)
            if query.dense is not None
            else None
        )
        sparse = (
            qe.Query.Nearest(
                qe.SparseVector(query.sparse.indices, query.sparse.values), using=SPARSE
            )
            if query.sparse is not None
            else None
        )
        if query.mode == "hybrid":
            fusion: Any = (
                qe.Fusion.Rrf(k=query.rrf_k, weights=[query.dense_weight, query.sparse_weight])
                if query.fusion == "rrf"
                else qe.Fusion.Dbsf()
            )
            request = qe.QueryRequest(
                limit=query.limit,
                prefetches=[
                    qe.Prefetch(limit=query.prefetch_limit, query=dense, filter=flt),
                    qe.Prefetch(limit=query.prefetch_limit, query=sparse, filter=flt),
                ],
                query=fusion,
                with_payload=True,
                with_vector=[DENSE] if query.with_dense else False,
            )
        else:
            request = qe.QueryRequest(
                limit=query.limit,
                query=dense if query.mode == "dense" else sparse,
                filter=flt,
                with_payload=True,
                with_vector=[DENSE] if query.with_dense else False,
            )
        return [
            Hit(str(p.id), float(p.score), dict(p.payload or {}), _dense(p.vector))
            for p in shard.query(request)
        ]

    def close(self) -> None:
        with self._guard:
            for shard in self._shards.values():
                shard.flush()
                shard.close()
            self._shards.clear()
            self._lock.release()


def _dense(vector: Any) -> list[float] | None:
    value = vector.get(DENSE) if isinstance(vector, dict) else None
    return list(value) if value is not None else None


def _edge_filter(
    must: Sequence[FieldFilter], must_not: Sequence[FieldFilter] = ()
) -> qe.Filter | None:
    if not must and not must_not:
        return None
    return qe.Filter(
        must=[_edge_condition(f) for f in must] or None,
        must_not=[_edge_condition(f) for f in must_not] or None,
    )


def _edge_condition(f: FieldFilter) -> qe.FieldCondition:
    if f.any is not None:
        return qe.FieldCondition(f.key, match=qe.MatchAny(list(f.any)))
    if f.is_range:
        return qe.FieldCondition(f.key, range=qe.RangeFloat(gte=f.gte, gt=f.gt, lte=f.lte, lt=f.lt))
    return qe.FieldCondition(f.key, match=qe.MatchValue(f.value))
