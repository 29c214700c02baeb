"""Server or cluster index: qdrant-client by URL (and API key).

The same protocol as the embedded adapter, so everything above it runs unchanged against a
Qdrant server, a cluster or qdrant-client's local mode (``QdrantClient(":memory:")``, which the
tests use). The collection's manifest lives in the collection's own metadata.

A new collection is laid out by :class:`ClusterParams` (shards, replicas, write consistency,
payload on disk): on a self-hosted cluster the shard number is fixed once the collection
exists, so it is decided here, from settings, and never later. Every payload index is created
right after the collection and before any point, so the HNSW graph is built with its
payload-aware links in one pass. See docs/scaling.md.

Example::

    index = ServerIndex.connect("http://localhost:6333", cluster=ClusterParams(shard_number=6))
    with index.bulk_load("docs"):  # HNSW m=0 while writing, the previous m afterwards
        index.upsert("docs", points)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from ..names import check_collection
from ..payload import INTEGER_FIELDS, KEYWORD_FIELDS, TENANT
from .base import DEFAULT_HNSW_M as DEFAULT_HNSW_M  # re-exported: tests name it here
from .base import (
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

if TYPE_CHECKING:  # settings import the index package; only the annotation needs Settings
    from ..settings import Settings

_SCROLL_PAGE = 1024
_MANIFEST_KEY = "grounded"


@dataclass(frozen=True)
class ClusterParams:
    """How the server lays out a new collection; ``None`` leaves the server's default.

    Example::

        ClusterParams(shard_number=6, replication_factor=2).create_kwargs()
        # {"shard_number": 6, "replication_factor": 2}
    """

    shard_number: int | None = None
    replication_factor: int | None = None
    write_consistency_factor: int | None = None
    on_disk_payload: bool | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ClusterParams:
        return cls(
            shard_number=settings.qdrant_shard_number,
            replication_factor=settings.qdrant_replication_factor,
            write_consistency_factor=settings.qdrant_write_consistency_factor,
            on_disk_payload=settings.qdrant_on_disk_payload,
        )

    def create_kwargs(self) -> dict[str, Any]:
        """The ``create_collection`` arguments to pass: a ``None`` is not sent at all, so the
        server (or cluster) picks its own default."""
        return {name: value for name, value in asdict(self).items() if value is not None}


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


def tuning_create_kwargs(tuning: IndexTuning) -> dict[str, Any]:
    """The ``create_collection`` arguments of the tuning's HNSW graph and int8 quantization;
    none when unset, so the server keeps its defaults."""
    kwargs: dict[str, Any] = {}
    hnsw = tuning.hnsw
    if hnsw is not None:
        kwargs["hnsw_config"] = qm.HnswConfigDiff(m=hnsw[0], ef_construct=hnsw[1])
    if tuning.int8:
        kwargs["quantization_config"] = qm.ScalarQuantization(
            scalar=qm.ScalarQuantizationConfig(type=qm.ScalarType.INT8, quantile=INT8_QUANTILE)
        )
    return kwargs


def server_sparse_params(tuning: IndexTuning) -> qm.SparseVectorParams:
    """BM25's sparse vector: IDF weighting, and the tuning's full-scan threshold when set."""
    threshold = tuning.sparse_full_scan
    index = qm.SparseIndexParams(full_scan_threshold=threshold) if threshold else None
    return qm.SparseVectorParams(modifier=qm.Modifier.IDF, index=index)


def client_search_params(tuning: IndexTuning, exact: bool) -> qm.SearchParams | None:
    params = tuning.search_params(exact)
    if params is None:
        return None
    quantization = params.pop("quantization", None)
    return qm.SearchParams(
        **params,
        quantization=qm.QuantizationSearchParams(**quantization) if quantization else None,
    )


class ServerIndex(QdrantAdapter[qm.Filter]):
    """:class:`~ingest.index.base.VectorIndex` over a qdrant-client connection.

    ``tuning`` (:class:`~ingest.index.base.IndexTuning`) shapes the HNSW graph and int8
    quantization of collections created here, and the search parameters of every query.
    """

    dialect = _CLIENT

    def __init__(
        self,
        client: QdrantClient,
        cluster: ClusterParams | None = None,
        tuning: IndexTuning | None = None,
    ) -> None:
        self.client = client
        self.cluster = cluster or ClusterParams()
        self.tuning = tuning or IndexTuning()
        self._manifests: dict[str, Manifest] = {}

    @classmethod
    def connect(
        cls,
        url: str,
        api_key: str | None = None,
        timeout: int = 30,
        cluster: ClusterParams | None = None,
        tuning: IndexTuning | None = None,
    ) -> ServerIndex:
        return cls(QdrantClient(url=url, api_key=api_key, timeout=timeout), cluster, tuning)

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
            sparse_vectors_config={SPARSE: server_sparse_params(self.tuning)},
            metadata={_MANIFEST_KEY: manifest.to_dict()},
            **self.cluster.create_kwargs(),
            **tuning_create_kwargs(self.tuning),
        )
        # Payload indexes before any point (Qdrant's bulk-upload advice): the HNSW graph then
        # gets its payload-aware links (tenant, doc_id filters) when it is first built.
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

    def _delete_where(self, collection: str, filters: Sequence[qm.Filter]) -> None:
        self._require(collection)
        for flt in filters:
            self.client.delete(collection, flt, wait=True)

    def _delete_ids(self, collection: str, ids: list[str]) -> None:
        self._require(collection)
        self.client.delete(collection, qm.PointIdsList(points=list(ids)), wait=True)

    def _set_payload(self, collection: str, ids: list[str], payload: dict[str, Any]) -> None:
        self._require(collection)
        self.client.set_payload(collection, payload, points=list(ids), wait=True)

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
        # Sent only when asked: local mode always searches exactly and warns about any params.
        params = client_search_params(self.tuning, plan.exact)
        prefetch = [
            qm.Prefetch(
                query=_CLIENT.query(p.query),
                using=p.query.using,
                limit=p.limit,
                filter=_CLIENT.filter_of(p.conditions),
                params=params,
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
            search_params=params,
        ).points

    def _scroll_page(
        self, collection: str, offset: str | None, limit: int
    ) -> tuple[Sequence[Any], Any]:
        self._require(collection)
        return self.client.scroll(
            collection, limit=limit, offset=offset, with_payload=True, with_vectors=True
        )

    @contextmanager
    def bulk_load(self, collection: str) -> Iterator[None]:
        """Defer the dense HNSW graph while loading (Qdrant's bulk-upload advice): ``m=0``,
        then the collection's previous ``m`` afterwards, also when the load fails.

        Vectors written meanwhile are stored and searchable by full scan; the graph is built
        once, in the background, after the restore. Sparse (BM25) vectors are indexed on
        write either way.
        """
        self._require(collection)
        previous = self.client.get_collection(collection).config.hnsw_config.m
        # m=0 here means an earlier load died before restoring: a grounded collection is never
        # meant to stay without its graph, so restore the tuned m or Qdrant's default, not 0.
        restore = previous or self.tuning.m or DEFAULT_HNSW_M
        self.client.update_collection(collection, hnsw_config=qm.HnswConfigDiff(m=0))
        try:
            yield
        finally:
            self.client.update_collection(collection, hnsw_config=qm.HnswConfigDiff(m=restore))

    def flush(self, collection: str) -> None:
        """Writes are acknowledged with ``wait=True``; the server persists and optimizes itself."""

    def close(self) -> None:
        self.client.close()
