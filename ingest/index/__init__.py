"""Index adapters and the one place that picks between them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import (
    CollectionNotFound,
    DocState,
    FieldFilter,
    Hit,
    IncompatibleCollection,
    IndexPoint,
    IndexProblem,
    IndexTuning,
    Manifest,
    SearchQuery,
    VectorIndex,
    require_manifest,
)
from .edge import DataDirLocked, EdgeIndex

if TYPE_CHECKING:  # settings import this package's types; only the annotation needs Settings
    from ..settings import Settings

__all__ = [
    "CollectionNotFound",
    "DataDirLocked",
    "DocState",
    "EdgeIndex",
    "FieldFilter",
    "Hit",
    "IncompatibleCollection",
    "IndexPoint",
    "IndexProblem",
    "IndexTuning",
    "Manifest",
    "SearchQuery",
    "VectorIndex",
    "open_index",
    "require_manifest",
]


def open_index(settings: Settings) -> VectorIndex:
    """Qdrant server when ``qdrant_url`` is set, else the embedded Edge shards in ``data_dir``.

    On a server, new collections take their shards, replicas, write consistency and payload
    storage from the ``qdrant_*`` settings (:class:`~ingest.index.server.ClusterParams`). On
    either, new collections take their HNSW graph and int8 quantization, and every search its
    ``hnsw_ef`` and quantization parameters, from the ``hnsw_*`` and ``quantization*`` settings
    (:class:`~ingest.index.base.IndexTuning`).
    """
    tuning = IndexTuning.from_settings(settings)
    if settings.qdrant_url:
        from .server import ClusterParams, ServerIndex

        key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        return ServerIndex.connect(
            settings.qdrant_url,
            key,
            timeout=settings.qdrant_timeout,
            cluster=ClusterParams.from_settings(settings),
            tuning=tuning,
        )
    return EdgeIndex(settings.data_dir, tuning)
