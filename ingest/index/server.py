"""Server or cluster index: qdrant-client by URL (and API key).

The same protocol as the embedded adapter, so everything above it runs unchanged against a
Qdrant server, a cluster or qdrant-client's local mode (``QdrantClient(":memory:")``, which the
tests use). The collection's manifest lives in the collection's own metadata.

Example::

    index = ServerIndex(QdrantClient(url="http://localhost:6333", api_key=None))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from ..names import check_collection
from ..payload import INTEGER_FIELDS, KEYWORD_FIELDS, TENANT
from .base import (
    DENSE,
    SPARSE,
    CollectionNotFound,
    Dialect,
    IndexPoint,
    IndexProblem,
    Manifest,
    QdrantAdapter,
    QueryPlan,
    scroll_all,
)

_SCROLL_PAGE = 1024
_MANIFEST_KEY = "grounded"


# qdrant-client takes keyword arguments, and ``using`` beside the query rather than inside it.
_CLIENT: Dialect[qm.Filter] = Dialect(
    match_value=lambda key, value: qm.FieldCondition(key=key, match=qm.MatchValue(value=value)),
    match_any=lambda key, values: qm.FieldCondition(key=key, match=qm.MatchAny(any=values)),
    match_range=lambda key, bounds: qm.FieldCondition(key=key, range=qm.Range(**bounds)),
    filter=lambda must, must_not: qm.Filter(must=must, must_not=must_not),
    sparse_vector=lambda vec: qm.SparseVector(indices=vec.indices, values=vec.values),
    nearest=lambda using, vector: vector,
    rrf=lambda rrf: qm.RrfQuery(rrf=qm.Rrf(k=rrf.k, weights=rrf.weights)),
    dbsf=lambda: qm.FusionQuery(fusion=qm.Fusion.DBSF),
)


class ServerIndex(QdrantAdapter[qm.Filter]):
    """:class:`~ingest.index.base.VectorIndex` over a qdrant-client connection."""

    dialect = _CLIENT

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

    # SDK calls ---------------------------------------------------------------------------
    def _upsert(self, collection: str, points: Sequence[IndexPoint]) -> None:
        self._require(collection)
        batch = [
            qm.PointStruct(id=p.id, vector=_CLIENT.vectors(p), payload=p.payload) for p in points
        ]
        self.client.upsert(collection, points=batch, wait=True)

    def _delete_where(self, collection: str, filters: Sequence[qm.Filter | None]) -> None:
        self._require(collection)
        for flt in filters:
            self.client.delete(collection, flt, wait=True)

    def _delete_ids(self, collection: str, ids: list[str]) -> None:
        self._require(collection)
        self.client.delete(collection, qm.PointIdsList(points=ids), wait=True)

    def _set_payload(self, collection: str, ids: list[str], payload: dict[str, Any]) -> None:
        self._require(collection)
        self.client.set_payload(collection, payload, points=ids, wait=True)

    def _scroll(
        self, collection: str, flt: qm.Filter | None, fields: list[str] | None
    ) -> list[Any]:
        self._require(collection)
        return scroll_all(
            lambda offset: self.client.scroll(
                collection,
                scroll_filter=flt,
                limit=_SCROLL_PAGE,
                offset=offset,
                with_payload=fields or False,
                with_vectors=False,
            )
        )

    def _count(self, collection: str, flt: qm.Filter | None) -> int:
        self._require(collection)
        return int(self.client.count(collection, count_filter=flt, exact=True).count)

    def _retrieve(self, collection: str, ids: list[str]) -> list[Any]:
        self._require(collection)
        return self.client.retrieve(collection, ids, with_payload=True)

    def _query(self, collection: str, plan: QueryPlan) -> list[Any]:
        self._require(collection)
        prefetch = [
            qm.Prefetch(
                query=_CLIENT.query(p.query),
                using=p.query.using,
                limit=p.limit,
                filter=_CLIENT.filter_of(p.conditions),
            )
            for p in plan.prefetches
        ]
        return self.client.query_points(
            collection,
            prefetch=prefetch or None,
            query=_CLIENT.query(plan.query),
            using=plan.using,
            query_filter=_CLIENT.filter_of(plan.conditions),
            limit=plan.limit,
            with_payload=True,
            with_vectors=plan.with_vector,
        ).points

    def flush(self, collection: str) -> None:
        """Writes are acknowledged with ``wait=True``; the server persists and optimizes itself."""

    def close(self) -> None:
        self.client.close()
