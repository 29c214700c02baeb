"""The index protocol: what ingest writes and retrieval reads, whatever Qdrant runs it.

Two adapters implement it: :class:`ingest.index.edge.EdgeIndex` (Qdrant Edge, in-process, the
default) and :class:`ingest.index.server.ServerIndex` (qdrant-client against a server or cluster).
Each collection holds one point per chunk with a dense vector ``dense`` (cosine), a sparse
vector ``bm25`` (IDF modifier) and the chunk's payload (:mod:`ingest.payload`), and records the
embedding model it was built with.

Both adapters derive from :class:`QdrantAdapter`, which holds everything that is not an SDK call:
the filter each call needs, the :class:`QueryPlan` of a search, paging and the shape of results.
An adapter keeps its collection handling, a :class:`Dialect` (how its SDK spells conditions,
vectors and queries) and one small method per engine call.

Tenants share collections (Qdrant's payload-partitioned multitenancy): every point carries a
``tenant`` keyword (indexed with ``is_tenant``), and every read, count and delete that takes a
tenant ANDs ``tenant == <it>`` into its filter inside the engine, so no caller-supplied filter or
doc id can reach another tenant's points. Collection names are checked here too
(:func:`~ingest.names.check_collection`), a second line of defence behind the request schemas.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

import numpy as np

from ..names import DEFAULT_TENANT
from ..payload import FILTERABLE_FIELDS as FILTERABLE_FIELDS
from ..payload import STATE_FIELDS, TENANT
from ..sparse import Bm25Params, SparseVec

DENSE = "dense"
SPARSE = "bm25"

# The one spelling of the search modes and fusions: settings, request schemas, retrieval and
# the query plan below all name these.
Mode = Literal["hybrid", "dense", "sparse"]
Fusion = Literal["rrf", "dbsf"]


class IndexProblem(Exception):
    """Base for index errors with a message meant for the user."""


class CollectionNotFound(IndexProblem):
    # The message never lists the other collections: over HTTP that would enumerate them.
    def __init__(self, name: str) -> None:
        super().__init__(f"collection {name!r} does not exist")
        self.name = name

    def __reduce__(self) -> tuple[type, tuple[str]]:  # raised again across a process (ProcessIndex)
        return type(self), (self.name,)


class IncompatibleCollection(IndexProblem):
    """The collection was built with another embedding model or dimension."""


@dataclass(frozen=True)
class Manifest:
    """What a collection was built with; checked on every write and query."""

    model: str
    dimension: int
    bm25: Bm25Params
    chunker: str
    created_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dimension": self.dimension,
            "bm25": self.bm25.as_dict(),
            "chunker": self.chunker,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        return cls(
            model=str(data["model"]),
            dimension=int(data["dimension"]),
            bm25=Bm25Params(**data["bm25"]),
            chunker=str(data.get("chunker", "")),
            created_at=str(data.get("created_at", "")),
        )

    def check_model(self, collection: str, model: str, dimension: int) -> None:
        if self.model != model or self.dimension != dimension:
            raise IncompatibleCollection(
                f"collection {collection!r} was built with embedding model {self.model!r} "
                f"(dimension {self.dimension}), but the configured model is {model!r} "
                f"(dimension {dimension}). Set GROUNDED_EMBEDDING_MODEL={self.model} or re-ingest "
                "into a new collection."
            )


# Qdrant's HNSW defaults: what a tuning that sets only one of ``m`` / ``ef_construct`` keeps for
# the other (Edge's HNSW config takes all of them) and what :meth:`IndexTuning.hnsw` reports.
DEFAULT_HNSW_M = 16
DEFAULT_HNSW_EF_CONSTRUCT = 100
DEFAULT_FULL_SCAN_THRESHOLD_KB = 10_000
# int8 buckets cover this share of the values; the outliers are clipped (Qdrant's advice).
INT8_QUANTILE = 0.99


@dataclass(frozen=True)
class IndexTuning:
    """The dense HNSW graph and int8 quantization of new collections, and how a search uses
    them; every field left unset keeps today's behaviour (Qdrant's defaults).

    ``m``, ``ef_construct``, ``quantization`` and ``sparse_full_scan`` are fixed when a
    collection is created;
    ``hnsw_ef``, ``rescore`` and ``oversampling`` go into every query's search parameters
    (each prefetch of a hybrid query too). Both adapters take one and spell it in their SDK.

    Example::

        tuning = IndexTuning(m=32, quantization="int8", hnsw_ef=64, oversampling=2.0)
        index = EdgeIndex(Path("data"), tuning=tuning)   # or ServerIndex(client, tuning=tuning)
        tuning.search_params(exact=False)
        # {"hnsw_ef": 64, "quantization": {"oversampling": 2.0}}
    """

    m: int | None = None
    ef_construct: int | None = None
    quantization: Literal["none", "int8"] = "none"
    hnsw_ef: int | None = None
    rescore: bool | None = None
    oversampling: float | None = None
    # BM25: a filter estimated to keep fewer points than this scores them one by one instead of
    # walking whole posting lists (Qdrant: 5,000).
    sparse_full_scan: int | None = None
    # Search a quantized collection's full vectors: for a bench comparing both on one store.
    ignore_quantization: bool = False

    def __post_init__(self) -> None:
        for name in ("m", "ef_construct", "hnsw_ef", "sparse_full_scan"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.oversampling is not None and self.oversampling < 1:
            raise ValueError(f"oversampling must be >= 1, got {self.oversampling}")

    @classmethod
    def from_settings(cls, settings: Any) -> IndexTuning:
        """From the ``hnsw_*`` and ``quantization*`` settings (:class:`IndexTuningSettings`)."""
        return cls(
            m=settings.hnsw_m,
            ef_construct=settings.hnsw_ef_construct,
            quantization=settings.quantization,
            hnsw_ef=settings.hnsw_ef,
            rescore=settings.quantization_rescore,
            oversampling=settings.quantization_oversampling,
            sparse_full_scan=settings.sparse_full_scan_threshold,
        )

    @property
    def hnsw(self) -> tuple[int, int] | None:
        """``(m, ef_construct)`` for a new collection, or None to leave the engine's defaults."""
        if self.m is None and self.ef_construct is None:
            return None
        return (self.m or DEFAULT_HNSW_M, self.ef_construct or DEFAULT_HNSW_EF_CONSTRUCT)

    @property
    def int8(self) -> bool:
        return self.quantization == "int8"

    def search_params(self, exact: bool) -> dict[str, Any] | None:
        """The search parameters of a query, engine-neutral; None when nothing is set (then
        none are sent: qdrant-client's local mode warns about any)."""
        params: dict[str, Any] = {}
        if exact:
            params["exact"] = True
        if self.hnsw_ef is not None:
            params["hnsw_ef"] = self.hnsw_ef
        quantization = {
            name: value
            for name, value in (
                ("ignore", self.ignore_quantization or None),
                ("rescore", self.rescore),
                ("oversampling", self.oversampling),
            )
            if value is not None
        }
        if quantization:
            params["quantization"] = quantization
        return params or None


@dataclass(frozen=True)
class IndexPoint:
    id: str
    dense: Sequence[float] | np.ndarray
    sparse: SparseVec
    payload: dict[str, Any]

    @classmethod
    def of(cls, record: Any) -> IndexPoint:
        """A record of either SDK read with its payload and vectors (both return
        ``{name: vector}``, the sparse one with ``indices`` and ``values``)."""
        vectors = record.vector or {}
        sparse = vectors.get(SPARSE)  # a chunk without BM25 terms may come back without one
        return cls(
            str(record.id),
            [float(x) for x in vectors[DENSE]],
            SparseVec(list(sparse.indices), [float(v) for v in sparse.values])
            if sparse is not None
            else SparseVec([], []),
            dict(record.payload or {}),
        )


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any]
    dense: list[float] | None = None  # the chunk's dense vector, for a mode-independent relevance

    @classmethod
    def of(cls, point: Any) -> Hit:
        """A scored point of either SDK (both have ``id``, ``score``, ``payload``, ``vector``)."""
        return cls(
            str(point.id), float(point.score), dict(point.payload or {}), hit_dense(point.vector)
        )


def hit_dense(vector: Any) -> list[float] | None:
    """The dense vector of a returned point's named vectors, or None when it was not asked for.

    Both SDKs return ``{name: vector}`` with the dense vector as a plain list of floats, and
    None in place of the dict when no vector was asked for; anything else under the name (a
    sparse vector, say) is not a dense vector.
    """
    value = vector.get(DENSE) if isinstance(vector, dict) else None
    return list(value) if isinstance(value, list) else None


@dataclass(frozen=True)
class FieldFilter:
    """One condition: ``value`` (equality), ``any`` (any-of) or a numeric range."""

    key: str
    value: str | int | bool | None = None
    any: tuple[str | int, ...] | None = None
    gte: float | None = None
    gt: float | None = None
    lte: float | None = None
    lt: float | None = None

    @property
    def is_range(self) -> bool:
        return any(v is not None for v in (self.gte, self.gt, self.lte, self.lt))

    @property
    def bounds(self) -> dict[str, float | None]:
        return {"gte": self.gte, "gt": self.gt, "lte": self.lte, "lt": self.lt}


@dataclass(frozen=True)
class SearchQuery:
    dense: Sequence[float] | np.ndarray | None  # an embedder's vector, or plain floats
    sparse: SparseVec | None
    mode: Mode = "hybrid"
    fusion: Fusion = "rrf"
    limit: int = 10
    prefetch_limit: int = 100
    rrf_k: int = 60
    dense_weight: float = 1.0
    sparse_weight: float = 1.0
    filters: tuple[FieldFilter, ...] = ()
    with_dense: bool = False  # return each hit's dense vector (costs ~1 ms per query)
    tenant: str = DEFAULT_TENANT
    exact: bool = False  # brute force instead of HNSW: for comparing two stores, not for serving

    @property
    def conditions(self) -> tuple[FieldFilter, ...]:
        """The caller's filters, always ANDed with the tenant's partition."""
        return (tenant_condition(self.tenant), *self.filters)

    def __post_init__(self) -> None:
        if self.mode in ("hybrid", "dense") and self.dense is None:
            raise ValueError(f"mode {self.mode!r} needs a dense vector")
        if self.mode in ("hybrid", "sparse") and self.sparse is None:
            raise ValueError(f"mode {self.mode!r} needs a sparse vector")


@dataclass
class DocState:
    """What the index holds for one document: enough to tell unchanged from stale."""

    hashes: set[str] = field(default_factory=set)
    chunk_indexes: set[int] = field(default_factory=set)
    chunk_counts: set[int] = field(default_factory=set)
    points: int = 0

    def is_current(self, doc_hash: str) -> bool:
        """True when the index holds exactly this version's chunks, nothing stale and no gaps."""
        if self.hashes != {doc_hash} or len(self.chunk_counts) != 1:
            return False
        (count,) = self.chunk_counts
        return self.points == count and self.chunk_indexes == set(range(count))

    def add(self, payload: Mapping[str, Any]) -> None:
        self.hashes.add(str(payload.get("doc_hash")))
        self.chunk_indexes.add(int(payload.get("chunk_index", -1)))
        self.chunk_counts.add(int(payload.get("chunk_count", -1)))
        self.points += 1


def tenant_condition(tenant: str) -> FieldFilter:
    return FieldFilter(TENANT, value=tenant)


def docs_condition(doc_ids: Sequence[str]) -> FieldFilter:
    return FieldFilter("doc_id", any=tuple(doc_ids))


def states_from_payloads(payloads: Iterable[Mapping[str, Any] | None]) -> dict[str, DocState]:
    """Group payloads scrolled with :data:`~ingest.payload.STATE_FIELDS` into one
    :class:`DocState` per document."""
    states: dict[str, DocState] = {}
    for payload in payloads:
        if payload:
            states.setdefault(str(payload["doc_id"]), DocState()).add(payload)
    return states


# Queries in no SDK's types -----------------------------------------------------------------
@dataclass(frozen=True)
class Nearest:
    """The points nearest to ``vector`` among their ``using`` vectors (dense or BM25)."""

    using: str
    vector: list[float] | SparseVec


@dataclass(frozen=True)
class Rrf:
    """Reciprocal rank fusion of the prefetches, one weight per prefetch."""

    k: int
    weights: list[float]


@dataclass(frozen=True)
class Dbsf:
    """Distribution-based score fusion of the prefetches."""


@dataclass(frozen=True)
class Prefetch:
    query: Nearest
    limit: int
    conditions: tuple[FieldFilter, ...]


@dataclass(frozen=True)
class QueryPlan:
    """A :class:`SearchQuery` as Qdrant's Query API takes it: ``hybrid`` fuses a dense and a
    BM25 prefetch, each filtered; ``dense`` and ``sparse`` are one filtered nearest query.

    Example::

        plan = QueryPlan.of(SearchQuery(dense=vec, sparse=None, mode="dense"))
        # plan.query == Nearest("dense", vec), plan.conditions == (tenant == "default",)
    """

    query: Nearest | Rrf | Dbsf
    limit: int
    prefetches: tuple[Prefetch, ...] = ()
    conditions: tuple[FieldFilter, ...] = ()  # on the top query; a fusion's are on its prefetches
    with_vector: list[str] | bool = False
    exact: bool = False  # every nearest query of the plan, prefetches included, without HNSW

    @property
    def using(self) -> str | None:
        return self.query.using if isinstance(self.query, Nearest) else None

    @classmethod
    def of(cls, query: SearchQuery) -> QueryPlan:
        dense = Nearest(DENSE, [float(x) for x in query.dense]) if query.dense is not None else None
        sparse = Nearest(SPARSE, query.sparse) if query.sparse is not None else None
        with_vector = [DENSE] if query.with_dense else False
        if query.mode != "hybrid":
            leg = dense if query.mode == "dense" else sparse
            assert leg is not None  # SearchQuery checked that its mode has its vector
            return cls(
                leg,
                query.limit,
                conditions=query.conditions,
                with_vector=with_vector,
                exact=query.exact,
            )
        assert dense is not None and sparse is not None
        fusion = (
            Rrf(query.rrf_k, [query.dense_weight, query.sparse_weight])
            if query.fusion == "rrf"
            else Dbsf()
        )
        legs = tuple(
            Prefetch(leg, query.prefetch_limit, query.conditions) for leg in (dense, sparse)
        )
        return cls(fusion, query.limit, legs, with_vector=with_vector, exact=query.exact)


FilterT = TypeVar("FilterT")


@dataclass(frozen=True)
class Dialect(Generic[FilterT]):
    """How one SDK spells filters, vectors and queries: all an adapter supplies to build them.

    Which kind of condition a :class:`FieldFilter` is, when a filter is empty and how a
    :class:`QueryPlan` part maps to a query are decided here, once for both adapters.
    """

    match_value: Callable[[str, Any], Any]
    match_any: Callable[[str, list[Any]], Any]
    match_range: Callable[[str, dict[str, float | None]], Any]  # gte, gt, lte, lt
    filter: Callable[[list[Any] | None, list[Any] | None], FilterT]  # (must, must_not)
    sparse_vector: Callable[[SparseVec], Any]
    nearest: Callable[[str, Any], Any]  # (using, the vector in the SDK's type)
    rrf: Callable[[Rrf], Any]
    dbsf: Callable[[], Any]

    def condition(self, f: FieldFilter) -> Any:
        if f.any is not None:
            return self.match_any(f.key, list(f.any))
        if f.is_range:
            return self.match_range(f.key, f.bounds)
        return self.match_value(f.key, f.value)

    def filter_of(
        self, must: Sequence[FieldFilter], must_not: Sequence[FieldFilter] = ()
    ) -> FilterT | None:
        if not must and not must_not:
            return None
        return self.filter(
            [self.condition(f) for f in must] or None,
            [self.condition(f) for f in must_not] or None,
        )

    def vectors(self, point: IndexPoint) -> dict[str, Any]:
        # tolist() converts in C: a third of an Edge upsert's time went into float(x) per value.
        dense = np.asarray(point.dense, dtype=np.float32).tolist()
        return {DENSE: dense, SPARSE: self.sparse_vector(point.sparse)}

    def query(self, query: Nearest | Rrf | Dbsf) -> Any:
        if isinstance(query, Rrf):
            return self.rrf(query)
        if isinstance(query, Dbsf):
            return self.dbsf()
        vector = query.vector
        return self.nearest(
            query.using, self.sparse_vector(vector) if isinstance(vector, SparseVec) else vector
        )


def scroll_all(page: Callable[[Any], tuple[Sequence[Any], Any]]) -> list[Any]:
    """Every record of a scroll: ``page(offset)`` returns a page and the next offset (None at
    the end), the way both SDKs page."""
    records: list[Any] = []
    offset = None
    while True:
        batch, offset = page(offset)
        records.extend(batch)
        if offset is None:
            return records


class VectorIndex(Protocol):
    """Storage for chunks; one implementation per way of running Qdrant."""

    def list_collections(self) -> list[str]: ...

    def manifest(self, collection: str) -> Manifest | None: ...

    def create_collection(self, collection: str, manifest: Manifest) -> None: ...

    def drop_collection(self, collection: str) -> None: ...

    def upsert(self, collection: str, points: Sequence[IndexPoint]) -> None:
        """Write points; each payload carries its ``tenant``."""
        ...

    def delete_documents(
        self, collection: str, doc_ids: Sequence[str], tenant: str = DEFAULT_TENANT
    ) -> None: ...

    def delete_stale_chunks(
        self, collection: str, current: Mapping[str, str], tenant: str = DEFAULT_TENANT
    ) -> None:
        """For each ``doc_id -> doc_hash``, delete that document's points of any other hash."""
        ...

    def document_states(
        self, collection: str, doc_ids: Sequence[str], tenant: str = DEFAULT_TENANT
    ) -> dict[str, DocState]: ...

    def document_sources(self, collection: str, tenant: str = DEFAULT_TENANT) -> dict[str, str]:
        """``doc_id -> source`` for every document of ``tenant`` in the collection."""
        ...

    def count(self, collection: str, tenant: str | None = None) -> int:
        """Points of ``tenant``, or of every tenant when ``None`` (operators only)."""
        ...

    def search(self, collection: str, query: SearchQuery) -> list[Hit]: ...

    # Repair (``grounded doctor``): every point id, payloads by id, removal by id.
    def point_ids(self, collection: str) -> list[str]: ...

    def payloads(self, collection: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Payloads of ``ids``; raises when the engine cannot read one of them."""
        ...

    def delete_points(self, collection: str, ids: Sequence[str]) -> None: ...

    def set_tenant(self, collection: str, ids: Sequence[str], tenant: str) -> None:
        """Stamp ``tenant`` on points written before tenants existed."""
        ...

    # Copying a collection (``grounded migrate``).
    def scroll_points(
        self, collection: str, offset: str | None = None, limit: int = 256
    ) -> tuple[list[IndexPoint], str | None]:
        """Up to ``limit`` whole points (vectors and payload) in id order from ``offset``
        (inclusive), and the offset of the next page (None after the last)."""
        ...

    def bulk_load(self, collection: str) -> AbstractContextManager[None]:
        """A context for writing many points at once: where the engine allows it, the dense
        HNSW graph is built once afterwards instead of while writing."""
        ...

    def flush(self, collection: str) -> None: ...

    def close(self) -> None: ...


class QdrantAdapter(ABC, Generic[FilterT]):
    """The engine-neutral half of both :class:`VectorIndex` adapters: which filter each call
    needs, how a search is planned and how results are shaped. An adapter supplies its SDK's
    :class:`Dialect`, the collection calls, and the SDK calls below; nothing else differs.
    Every SDK call raises :class:`CollectionNotFound` for a collection that does not exist.
    """

    dialect: Dialect[FilterT]

    # SDK calls ---------------------------------------------------------------------------
    @abstractmethod
    def _upsert(self, collection: str, points: Sequence[IndexPoint]) -> None: ...

    @abstractmethod
    def _delete_where(self, collection: str, filters: Sequence[FilterT]) -> None:
        """Delete the points of each filter in turn."""

    @abstractmethod
    def _delete_ids(self, collection: str, ids: list[str]) -> None: ...

    @abstractmethod
    def _set_payload(self, collection: str, ids: list[str], payload: dict[str, Any]) -> None: ...

    @abstractmethod
    def _scroll(self, collection: str, flt: FilterT | None, fields: list[str] | None) -> list[Any]:
        """Every record the filter matches, with these payload fields (none when None)."""

    @abstractmethod
    def _count(self, collection: str, flt: FilterT | None) -> int: ...

    @abstractmethod
    def _retrieve(self, collection: str, ids: list[str]) -> list[Any]: ...

    @abstractmethod
    def _query(self, collection: str, plan: QueryPlan) -> list[Any]:
        """The scored points of the plan, with payloads and ``plan.with_vector``."""

    @abstractmethod
    def _scroll_page(
        self, collection: str, offset: str | None, limit: int
    ) -> tuple[Sequence[Any], Any]:
        """One page of records with payloads and every vector, and the next offset."""

    @abstractmethod
    def bulk_load(self, collection: str) -> AbstractContextManager[None]:
        """See :meth:`VectorIndex.bulk_load`; each adapter says what its engine can defer."""

    # VectorIndex -------------------------------------------------------------------------
    def _filter(self, *must: FieldFilter, must_not: Sequence[FieldFilter] = ()) -> FilterT | None:
        return self.dialect.filter_of(must, must_not)

    def _where(self, *must: FieldFilter, must_not: Sequence[FieldFilter] = ()) -> FilterT:
        """The filter of a delete: never empty (an empty filter would match every point)."""
        flt = self._filter(*must, must_not=must_not)
        if flt is None:
            raise ValueError("a delete needs at least one condition")
        return flt

    def upsert(self, collection: str, points: Sequence[IndexPoint]) -> None:
        if points:
            self._upsert(collection, points)

    def delete_documents(
        self, collection: str, doc_ids: Sequence[str], tenant: str = DEFAULT_TENANT
    ) -> None:
        if doc_ids:
            flt = self._where(tenant_condition(tenant), docs_condition(doc_ids))
            self._delete_where(collection, [flt])

    def delete_stale_chunks(
        self, collection: str, current: Mapping[str, str], tenant: str = DEFAULT_TENANT
    ) -> None:
        stale = [
            self._where(
                tenant_condition(tenant),
                FieldFilter("doc_id", value=doc_id),
                must_not=[FieldFilter("doc_hash", value=doc_hash)],
            )
            for doc_id, doc_hash in current.items()
        ]
        self._delete_where(collection, stale)

    def delete_points(self, collection: str, ids: Sequence[str]) -> None:
        if ids:
            self._delete_ids(collection, list(ids))

    def set_tenant(self, collection: str, ids: Sequence[str], tenant: str) -> None:
        if ids:
            self._set_payload(collection, list(ids), {TENANT: tenant})

    def document_states(
        self, collection: str, doc_ids: Sequence[str], tenant: str = DEFAULT_TENANT
    ) -> dict[str, DocState]:
        if not doc_ids:
            return {}
        flt = self._filter(tenant_condition(tenant), docs_condition(doc_ids))
        return states_from_payloads(r.payload for r in self._scroll(collection, flt, STATE_FIELDS))

    def document_sources(self, collection: str, tenant: str = DEFAULT_TENANT) -> dict[str, str]:
        # One chunk per document: its first.
        flt = self._filter(tenant_condition(tenant), FieldFilter("chunk_index", value=0))
        return {
            str(r.payload["doc_id"]): str(r.payload.get("source", ""))
            for r in self._scroll(collection, flt, ["doc_id", "source"])
        }

    def count(self, collection: str, tenant: str | None = None) -> int:
        flt = self._filter(tenant_condition(tenant)) if tenant is not None else None
        return self._count(collection, flt)

    def point_ids(self, collection: str) -> list[str]:
        return [str(r.id) for r in self._scroll(collection, None, None)]

    def payloads(self, collection: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {str(r.id): dict(r.payload or {}) for r in self._retrieve(collection, list(ids))}

    def search(self, collection: str, query: SearchQuery) -> list[Hit]:
        return [Hit.of(p) for p in self._query(collection, QueryPlan.of(query))]

    def scroll_points(
        self, collection: str, offset: str | None = None, limit: int = 256
    ) -> tuple[list[IndexPoint], str | None]:
        records, next_offset = self._scroll_page(collection, offset, limit)
        return [IndexPoint.of(r) for r in records], (
            None if next_offset is None else str(next_offset)
        )


def require_manifest(index: VectorIndex, collection: str) -> Manifest:
    manifest = index.manifest(collection)
    if manifest is None:
        raise CollectionNotFound(collection)
    return manifest
