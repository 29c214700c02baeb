"""The data that flows through ingest: documents in, chunks out."""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .names import DEFAULT_TENANT

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
    # Where each whole sentence of ``text`` starts, relative to ``start`` (empty for a piece of a
    # sentence too long for one chunk): stored so that answers need not split text at query time.
    sentences: tuple[int, ...] = ()

    @property
    def context(self) -> str:
        return chunk_context(self.title, self.headings)

    @property
    def embed_text(self) -> str:
        context = self.context
        return f"{context}\n{self.text}" if context else self.text


def chunk_context(title: str, headings: Sequence[str]) -> str:
    """``Title > Heading > Subheading``: where a chunk sits in its document.

    The one renderer of a chunk's place: the embedded text, the prompt's block labels and the
    blocks attribution compares with all use it. Empty parts are dropped, and a part equal to the
    one before it is written once ("Intro", not "Intro > Intro", when a markdown title is also
    the first heading).
    """
    parts = [p for p in (title, *headings) if p]
    deduped = [p for i, p in enumerate(parts) if i == 0 or p != parts[i - 1]]
    return " > ".join(deduped)


def point_id(doc_id: str, chunk_index: int, tenant: str = DEFAULT_TENANT) -> str:
    """Stable id of a chunk. Tenants may reuse doc ids, so the tenant is part of the id.

    The default tenant keeps the ids of collections written before tenants existed. Other
    tenants' keys are JSON arrays: injective, and never containing the ``\x1f`` that every
    default key has, so no doc id (which may hold any character) can reach another tenant's id.
    """
    if tenant == DEFAULT_TENANT:
        key = f"{doc_id}\x1f{chunk_index}"
    else:
        key = json.dumps([tenant, doc_id, chunk_index], ensure_ascii=False)
    return str(uuid.uuid5(POINT_NAMESPACE, key))


# Qdrant stores payloads as JSON: keep them shallow enough to read back (deep nesting hits the
# engine's recursion limit) and small enough not to dominate a point.
MAX_METADATA_DEPTH = 8
MAX_METADATA_BYTES = 16_384
INT64 = (-(2**63), 2**63 - 1)


def check_metadata(
    metadata: Any, *, max_depth: int = MAX_METADATA_DEPTH, max_bytes: int = MAX_METADATA_BYTES
) -> dict[str, Any]:
    """``metadata`` if Qdrant can store and return it; else ``ValueError`` saying why.

    Refused: nesting deeper than ``max_depth``, NaN or infinite numbers, integers outside int64,
    non-string keys, and more than ``max_bytes`` of JSON.
    """
    if not isinstance(metadata, dict):
        raise ValueError("metadata must be a JSON object")
    _check_value(metadata, "metadata", 1, max_depth)
    size = len(json.dumps(metadata, ensure_ascii=False).encode("utf-8"))
    if size > max_bytes:
        raise ValueError(f"metadata is {size} bytes of JSON; the limit is {max_bytes}")
    return metadata


def _check_value(value: Any, where: str, depth: int, max_depth: int) -> None:
    if isinstance(value, dict | list):
        if depth > max_depth:
            raise ValueError(f"{where} nests deeper than {max_depth} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(value, dict) and not isinstance(key, str):
                raise ValueError(f"{where} has a non-string key {key!r}")
            _check_value(item, f"{where}.{key}", depth + 1, max_depth)
    elif isinstance(value, bool) or value is None or isinstance(value, str):
        return
    elif isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise ValueError(f"{where} is an integer outside the 64-bit range")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value!r}; NaN and infinity cannot be stored")
    else:
        raise ValueError(f"{where} has a value of type {type(value).__name__}, not JSON")
