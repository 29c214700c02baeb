"""The index protocol: what ingest writes and retrieval reads, whatever Qdrant runs it.

Two adapters implement it: :class:`ingest.index.edge.EdgeIndex` (Qdrant Edge, in-process, the
default) and :class:`ingest.index.server.ServerIndex` (qdrant-client against a server or cluster).
Each collection holds one point per chunk with a dense vector ``dense`` (cosine) and a sparse
vector ``bm25`` (IDF modifier), and records the embedding model it was built with.

Tenants share collections (Qdrant's payload-partitioned multitenancy): every point carries a
``tenant`` keyword (indexed with ``is_tenant``), and every read, count and delete that takes a
tenant ANDs ``tenant == <it>`` into its filter inside the engine, so no caller-supplied filter or
doc id can reach another tenant's points. Collection names are checked here too
(:func:`~ingest.names.check_collection`), a second line of defence behind the request schemas.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ..names import DEFAULT_TENANT
from ..sparse import Bm25Params, SparseVec

DENSE = "dense"
SPARSE = "bm25"
TENANT = "tenant"
# Payload fields with an index: what filters, re-ingest checks and pruning look up. The tenant
# field gets its own index with ``is_tenant`` so Qdrant co-locates each tenant's points.
KEYWORD_FIELDS = ("doc_id", "source", "doc_hash")
INTEGER_FIELDS = ("chunk_index",)
FILTERABLE_FIELDS = ("doc_id", "source", "title", "chunk_index")

Mode = Literal["hybrid", "dense", "sparse"]
Fusion = Literal["rrf", "dbsf"]


class IndexProblem(Exception):
    """Base for index errors with a message meant for the user."""


class CollectionNotFound(IndexProblem):
    # The message never lists the other collections: over HTTP that would enumerate them.
    def __init__(self, name: str) -> None:
        super().__init__(f"collection {name!r} does not exist")
        self.name = name


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


@dataclass(frozen=True)
class IndexPoint:
    id: str
    dense: Sequence[float]
    sparse: SparseVec
    payload: dict[str, Any]


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any]
    dense: list[float] | None = None  # the chunk's dense vector, for a mode-independent relevance


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


@dataclass(frozen=True)
class SearchQuery:
    dense: Sequence[float] | None
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


STATE_FIELDS = ["doc_id", "doc_hash", "chunk_index", "chunk_count"]


def tenant_condition(tenant: str) -> FieldFilter:
    return FieldFilter(TENANT, value=tenant)


def docs_condition(doc_ids: Sequence[str]) -> FieldFilter:
    return FieldFilter("doc_id", any=tuple(doc_ids))


def states_from_payloads(payloads: Iterable[Mapping[str, Any] | None]) -> dict[str, DocState]:
    """Group scrolled payloads (with :data:`STATE_FIELDS`) into one :class:`DocState` per doc."""
    states: dict[str, DocState] = {}
    for payload in payloads:
        if payload:
            states.setdefault(str(payload["doc_id"]), DocState()).add(payload)
    return states


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

    def flush(self, collection: str) -> None: ...

    def close(self) -> None: ...


def require_manifest(index: VectorIndex, collection: str) -> Manifest:
    manifest = index.manifest(collection)
    if manifest is None:
        raise CollectionNotFound(collection)
    return manifest
