"""A corpus for job tests, and the exact chunk set a clean ingest of it gives."""

from __future__ import annotations

from pathlib import Path

from ingest.build import build_ingestor
from ingest.documents import Document
from ingest.embedding import Embedder
from ingest.index import EdgeIndex, VectorIndex
from ingest.settings import Settings

TOPICS = ["bees", "rivers", "volcanoes", "comets", "glaciers"]


def corpus(n: int) -> list[Document]:
    """``n`` reports of 13 sentences (one or two chunks each)."""
    return [
        Document(
            f"doc-{i}",
            f"Report {i} on {TOPICS[i % 5]}. "
            + " ".join(f"Item {j} of report {i} is on {TOPICS[(i + j) % 5]}." for j in range(12)),
            title=f"Report {i}",
        )
        for i in range(n)
    ]


def chunk_set(index: VectorIndex, collection: str) -> dict[str, tuple[str, int, str]]:
    """point id -> (doc id, chunk index, content hash) of every point."""
    payloads = index.payloads(collection, index.point_ids(collection))
    return {i: (p["doc_id"], p["chunk_index"], p["doc_hash"]) for i, p in payloads.items()}


def clean_chunk_set(
    settings: Settings, embedder: Embedder, docs: list[Document], where: Path
) -> dict[str, tuple[str, int, str]]:
    """What one uninterrupted ingest of ``docs`` into collection "kb" stores."""
    index = EdgeIndex(where)
    try:
        build_ingestor(settings, index, embedder, "kb", "default").ingest(docs)
        return chunk_set(index, "kb")
    finally:
        index.close()
