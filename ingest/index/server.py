"""Server or cluster index: qdrant-client by URL (and API key).

The same protocol as the embedded adapter, so everything above it runs unchanged against a
Qdrant server, a cluster or qdrant-client's local mode (``QdrantClient(":memory:")``, which the
tests use). The collection's manifest lives in the collection's own metadata.

Example::

    index = ServerIndex(QdrantClient(url="http://localhost:6333", api_key=None))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

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
_MANIFEST_KEY = "grounded"


class ServerIndex:
    """:class:`~ingest.index.base.VectorIndex` over a qdrant-client connection."""

    def __init__(self, client: QdrantClient) -> None:
        self.client = client
        self._manifests: dict[str, Manifest] = {}

    @classmethod
    def connect(cls, url: str, api_key: str | None = None, timeout: int = 30) -> ServerIndex:
        return cls(QdrantClient(url=url, api_key=api_key, timeout=timeout))

    # collections -------------------------------------------------------------------------
    def list_collections(self) -> list[str]:
        return sorted(c.name for c in self.client.get_collections().collections)

    def manifest(self, collection: str) -> Manifest | None:
        if collection in self._manifests:
            return self._manifests[collection]
        if not self.client.collection_exists(check_collection(collection)):
            return None
        metadata = self.client.get_collection(collection).config.metadata or {}
        if _MANIFEST_KEY not in metadata:
            raise IndexProblem(
                f"collection {collection!r} exists but was not created by grounded "
                "(no manifest in its metadata)"
            )
        manifest = Manifest.from_dict(metadata[_MANIFEST_KEY])
        self._manifests[collection] = manifest
        return manifest

    def create_collection(self, collection: str, manifest: Manifest) -> None:
        if self.client.collection_exists(check_collection(collection)):
            raise IndexProblem(f"collection {collection!r} already exists")
        self.client.create_collection(
            collection,
            vectors_config={
                DENSE: qm.VectorParams(size=manifest.dimension, distance=qm.Distance.COSINE)
            },
            sparse_vectors_config={SPARSE: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
            metadata={_MANIFEST_KEY: manifest.to_dict()},
        )
        for name in KEYWORD_FIELDS:
            self.client.create_payload_index(collection, name, qm.PayloadSchemaType.KEYWORD)
        for name in INTEGER_FIELDS:
            self.client.create_payload_index(collection, name, qm.PayloadSchemaType.INTEGER)
        self.client.create_payload_index(
            collection,
            TENANT,
            qm.KeywordIndexParams(type=qm.KeywordIndexType.KEYWORD, is_tenant=True),
        )
        self._manifests[collection] = manifest

    def drop_collection(self, collection: str) -> None:
        self._manifests.pop(check_collection(collection), None)
        self.client.delete_collection(collection)

    def _require(self, collection: str) -> None:
        if collection not in self._manifests and self.manifest(collection) is None:
            raise CollectionNotFound(collection)

    # writes ------------------------------------------------------------------------------
    def upsert(self, collection: str, points: Sequence[IndexPoint]) -> None:
        if not points:
            return
        self._require(collection)
        self.client.upsert(
            collection,
            points=[
                qm.PointStruct(
                    id=p.id,
                    vector={
                        DENSE: [float(x) for x in p.dense],
                        SPARSE: qm.SparseVector(indices=p.sparse.indices, values=p.sparse.values),
                    },
                    payload=p.payload,
                )
                for p in points
            ],
            wait=True,
        )

    def delete_documents(
        self, collection: str, doc_ids: Sequence[str], tenant: str = DEFAULT_TENANT
    ) -> None:
        if doc_ids:
            self._require(collection)
            flt = _client_filter([tenant_condition(tenant), docs_condition(doc_ids)])
            self.client.delete(collection, flt, wait=True)

    def delete_stale_chunks(
        self, collection: str, current: Mapping[str, str], tenant: str = DEFAULT_TENANT
    ) -> None:
        self._require(collection)
        for doc_id, doc_hash in current.items():
            stale = _client_filter(
                [tenant_condition(tenant), FieldFilter("doc_id", value=doc_id)],
                must_not=[FieldFilter("doc_hash", value=doc_hash)],
            )
            self.client.delete(collection, stale, wait=True)

    def delete_points(self, collection: str, ids: Sequence[str]) -> None:
        if ids:
            self._require(collection)
            self.client.delete(collection, qm.PointIdsList(points=list(ids)), wait=True)

    def set_tenant(self, collection: str, ids: Sequence[str], tenant: str) -> None:
        if ids:
            self._require(collection)
            self.client.set_payload(collection, {TENANT: tenant}, points=list(ids), wait=True)

    def flush(self, collection: str) -> None:
        """Writes are acknowledged with ``wait=True``; the server persists and optimizes itself."""

    # reads -------------------------------------------------------------------------------
    def _scroll(
        self, collection: str, flt: qm.Filter | None, fields: list[str] | None
    ) -> list[Any]:
        self._require(collection)
        records: list[Any] = []
        offset = None
        while True:
            page, offset = self.client.scroll(
                collection,
                scroll_filter=flt,
                limit=_SCROLL_PAGE,
                offset=offset,
                with_payload=fields or False,
                with_vectors=False,
            )
            records.extend(page)
            if offset is None:
                return records

    def document_states(
        self, collection: str, doc_ids: Sequence[str], tenant: str = DEFAULT_TENANT
    ) -> dict[str, DocState]:
        if not doc_ids:
            return {}
        flt = _client_filter([tenant_condition(tenant), docs_condition(doc_ids)])
        return states_from_payloads(r.payload for r in self._scroll(collection, flt, STATE_FIELDS))

    def document_sources(self, collection: str, tenant: str = DEFAULT_TENANT) -> dict[str, str]:
        flt = _client_filter([tenant_condition(tenant), FieldFilter("chunk_index", value=0)])
        return {
            str(r.payload["doc_id"]): str(r.payload.get("source", ""))
            for r in self._scroll(collection, flt, ["doc_id", "source"])
        }

    def count(self, collection: str, tenant: str | None = None) -> int:
        self._require(collection)
        flt = _client_filter([tenant_condition(tenant)]) if tenant is not None else None
        return int(self.client.count(collection, count_filter=flt, exact=True).count)

    def point_ids(self, collection: str) -> list[str]:
        return [str(r.id) for r in self._scroll(collection, None, None)]

    def payloads(self, collection: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        self._require(collection)
        records = self.client.retrieve(collection, list(ids), with_payload=True)
        return {str(r.id): dict(r.payload or {}) for r in records}

    def search(self, collection: str, query: SearchQuery) -> list[Hit]:
        self._require(collection)
        flt = _client_filter(query.conditions)
        dense = [float(x) for x in query.dense] if query.dense is not None else None
        sparse = (
            qm.SparseVector(indices=query.sparse.indices, values=query.sparse.values)
            if query.sparse is not None
            else None
        )
        if query.mode == "hybrid":
            fusion: Any = (
                qm.RrfQuery(
                    rrf=qm.Rrf(k=query.rrf_k, weights=[query.dense_weight, query.sparse_weight])
                )
                if query.fusion == "rrf"
                else qm.FusionQuery(fusion=qm.Fusion.DBSF)
            )
            response = self.client.query_points(
                collection,
                prefetch=[
                    qm.Prefetch(query=dense, using=DENSE, limit=query.prefetch_limit, filter=flt),
                    qm.Prefetch(query=sparse, using=SPARSE, limit=query.prefetch_limit, filter=flt),
                ],
                query=fusion,
                limit=query.limit,
                with_payload=True,
                with_vectors=[DENSE] if query.with_dense else False,
            )
        else:
            response = self.client.query_points(
                collection,
                query=dense if query.mode == "dense" else sparse,
                using=DENSE if query.mode == "dense" else SPARSE,
                query_filter=flt,
                limit=query.limit,
                with_payload=True,
                with_vectors=[DENSE] if query.with_dense else False,
            )
        return [
            Hit(str(p.id), float(p.score), dict(p.payload or {}), _dense(p.vector))
            for p in response.points
        ]

    def close(self) -> None:
        self.client.close()


def _dense(vector: Any) -> list[float] | None:
    value = vector.get(DENSE) if isinstance(vector, dict) else None
    return list(value) if isinstance(value, list) else None


def _client_filter(
    must: Sequence[FieldFilter], must_not: Sequence[FieldFilter] = ()
) -> qm.Filter | None:
    if not must and not must_not:
        return None
    return qm.Filter(
        must=[_client_condition(f) for f in must] or None,
        must_not=[_client_condition(f) for f in must_not] or None,
    )


def _client_condition(f: FieldFilter) -> qm.FieldCondition:
    if f.any is not None:
        return qm.FieldCondition(key=f.key, match=qm.MatchAny(any=list(f.any)))
    if f.is_range:
        return qm.FieldCondition(key=f.key, range=qm.Range(gte=f.gte, gt=f.gt, lte=f.lte, lt=f.lt))
    return qm.FieldCondition(key=f.key, match=qm.MatchValue(value=f.value))
