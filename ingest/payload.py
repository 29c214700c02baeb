"""The chunk payload: what ingest stores on every point, and what the index adapters, retrieval
and ``grounded doctor`` read back.

A point's payload is the flat dict of :class:`StoredChunk`'s fields, in that order, written by
:func:`chunk_payload`, less empty ``headings`` and ``metadata``, with ``sentences`` as one string
of numbers ("0 41 97"): each value costs a conversion in the engine's Python binding, about half
of what writing a point into Qdrant Edge costs (``bench/edge_writes.py``). Some fields have an
engine index (:data:`KEYWORD_FIELDS`, :data:`INTEGER_FIELDS`, and :data:`TENANT` with
``is_tenant``); the API filters on :data:`FILTERABLE_FIELDS`; re-ingest reads
:data:`STATE_FIELDS`. ``sentences`` (where each whole sentence of the text starts, relative to
it) lets extractive answers quote sentences without splitting text at query time; points written
before it existed read as ``None``, and their readers split. Nothing here imports
``ingest.index`` (which imports this).

Example::

    payload = chunk_payload(chunk, doc_hash="3f2a...", chunk_count=4, tenant="acme")
    stored = StoredChunk.from_payload(payload)  # what a search hit holds
    assert payload_problem(payload) is None  # what ``grounded doctor`` checks
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, get_type_hints

from .documents import Chunk
from .names import DEFAULT_TENANT


@dataclass(frozen=True)
class StoredChunk:
    """One point's payload, field for field."""

    tenant: str
    doc_id: str
    chunk_index: int
    chunk_count: int
    doc_hash: str  # the document version's hash: chunks of any other hash are stale
    text: str
    title: str
    headings: list[str]
    source: str
    start: int
    end: int
    metadata: dict[str, Any]
    # Where each whole sentence of ``text`` starts, relative to it: extractive answers quote
    # sentences without splitting text at query time. None: written before grounded stored them.
    sentences: list[int] | None = None

    def to_payload(self) -> dict[str, Any]:
        """The payload to store: every field, in order, but empty ``headings`` and ``metadata``
        (read back as empty) and ``sentences`` packed into one string ("" for no whole
        sentence, absent for unknown)."""
        payload = {name: getattr(self, name) for name in FIELDS}
        for name in _OMITTED_WHEN_EMPTY:
            if not payload[name]:
                del payload[name]
        if self.sentences is None:
            del payload["sentences"]
        else:
            payload["sentences"] = " ".join(map(str, self.sentences))
        return payload

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> StoredChunk:
        """Read a payload leniently: a missing field reads as empty (``""``, ``0``, ``[]``,
        ``{}``; the tenant as the default one), so points written by older versions still
        serve. :func:`payload_problem` is the strict check."""
        return cls(
            tenant=str(payload.get(TENANT, DEFAULT_TENANT)),
            doc_id=str(payload.get("doc_id", "")),
            chunk_index=int(payload.get("chunk_index", 0)),
            chunk_count=int(payload.get("chunk_count", 0)),
            doc_hash=str(payload.get("doc_hash", "")),
            text=str(payload.get("text", "")),
            title=str(payload.get("title", "")),
            headings=list(payload.get("headings") or []),
            source=str(payload.get("source", "")),
            start=int(payload.get("start", 0)),
            end=int(payload.get("end", 0)),
            metadata=dict(payload.get("metadata") or {}),
            sentences=_sentence_starts(payload.get("sentences"), len(str(payload.get("text", "")))),
        )


FIELDS = tuple(f.name for f in fields(StoredChunk))
_OMITTED_WHEN_EMPTY = ("headings", "metadata")
TENANT = "tenant"
# Without these a point can be neither served nor checked for being current.
REQUIRED_FIELDS = ("doc_id", "chunk_index", "chunk_count", "doc_hash", "text")
# Payload fields with an index: what filters, re-ingest checks and pruning look up. The tenant
# field gets its own index with ``is_tenant`` so Qdrant co-locates each tenant's points.
KEYWORD_FIELDS = ("doc_id", "source", "doc_hash")
INTEGER_FIELDS = ("chunk_index",)
FILTERABLE_FIELDS = ("doc_id", "source", "title", "chunk_index")
STATE_FIELDS = ["doc_id", "doc_hash", "chunk_index", "chunk_count"]

_TYPES: dict[str, type] = get_type_hints(StoredChunk)


def chunk_payload(
    chunk: Chunk, doc_hash: str, chunk_count: int, tenant: str = DEFAULT_TENANT
) -> dict[str, Any]:
    """The payload of ``chunk``, one of ``chunk_count`` chunks of a document version."""
    return StoredChunk(
        tenant=tenant,
        doc_id=chunk.doc_id,
        chunk_index=chunk.chunk_index,
        chunk_count=chunk_count,
        doc_hash=doc_hash,
        text=chunk.text,
        title=chunk.title,
        headings=list(chunk.headings),
        source=chunk.source,
        start=chunk.start,
        end=chunk.end,
        metadata=chunk.metadata,
        sentences=list(chunk.sentences),
    ).to_payload()


def _sentence_starts(value: Any, length: int) -> list[int] | None:
    """Stored sentence starts if they are usable (increasing offsets inside the text), else None,
    which makes readers split the text themselves, as for points written before they existed.
    They are stored as a string of numbers; points written before 2026-11-28 hold a list."""
    if isinstance(value, str):
        try:
            value = [int(item) for item in value.split()]
        except ValueError:
            return None
    if not isinstance(value, list):
        return None
    starts: list[int] = []
    for item in value:
        # JSON engines may hand integers back as floats.
        if isinstance(item, bool) or not isinstance(item, int | float):
            return None
        if isinstance(item, float) and not item.is_integer():
            return None
        start = int(item)
        if not (starts[-1] if starts else -1) < start < max(length, 1):
            return None
        starts.append(start)
    return starts


def payload_problem(payload: Mapping[str, Any]) -> str | None:
    """Why ``payload`` is not one grounded wrote (a required field missing or of the wrong
    type), or None."""
    for name in REQUIRED_FIELDS:
        kind = _TYPES[name]
        if not isinstance(payload.get(name), kind):
            return f"payload field {name!r} is missing or not {kind.__name__}"
    return None
