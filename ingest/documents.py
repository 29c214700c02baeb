"""The data that flows through ingest: documents in, chunks out."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

# Fixed namespace so point ids are the same on every machine and every run.
POINT_NAMESPACE = uuid.UUID("6f1d3c52-8a0e-4c1b-9a55-3b7e2f0d9c41")


@dataclass(frozen=True)
class Document:
    """One source document. ``id`` is stable across runs (a path or the corpus' own id)."""

    id: str
    text: str
    title: str = ""
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def content_hash(self, salt: str = "") -> str:
        """Hash of everything that ends up in the index; ``salt`` carries the chunking config."""
        blob = json.dumps(
            [self.title, self.text, self.source, self.metadata, salt],
            sort_keys=True,
            ensure_ascii=False,
            default=str,
        )
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class Chunk:
    """A span of a document, with the context it is embedded with."""

    doc_id: str
    chunk_index: int
    text: str
    start: int
    end: int
    title: str = ""
    headings: tuple[str, ...] = ()
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def point_id(self) -> str:
        return point_id(self.doc_id, self.chunk_index)

    @property
    def context(self) -> str:
        return chunk_context(self.title, self.headings)

    @property
    def embed_text(self) -> str:
        context = self.context
        return f"{context}\n{self.text}" if context else self.text


def chunk_context(title: str, headings: tuple[str, ...]) -> str:
    """Title and heading path, embedded with the text so a chunk keeps its place."""
    parts = [p for p in (title, *headings) if p]
    # Avoid "Intro > Intro" when a markdown title is also the first heading.
    deduped = [p for i, p in enumerate(parts) if i == 0 or p != parts[i - 1]]
    return " > ".join(deduped)


def point_id(doc_id: str, chunk_index: int) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, f"{doc_id}\x1f{chunk_index}"))
