"""``ingest/payload.py``: the chunk payload the ingestor writes is the one retrieval and
``grounded doctor`` read back, on both adapters."""

from dataclasses import asdict
from typing import Any

import pytest

from ingest.build import build_ingestor
from ingest.documents import Document
from ingest.embedding import SentenceTransformerEmbedder
from ingest.index import VectorIndex
from ingest.payload import (
    FIELDS,
    FILTERABLE_FIELDS,
    INTEGER_FIELDS,
    KEYWORD_FIELDS,
    STATE_FIELDS,
    StoredChunk,
    payload_problem,
)
from ingest.settings import Settings
from service.retrieval import HybridRetriever, SearchParams

DOC = Document(
    "guide",
    "# Setup\n\n"
    + " ".join(f"Install step {i} needs the package cache warmed first." for i in range(20))
    + "\n\n## Checks\n\nRun the health check after every install.",
    title="Guide",
    source="docs/guide.md",
    metadata={"lang": "en", "year": 2024, "tags": ["ops", "install"]},
)


def test_payload_written_by_the_ingestor_reads_back_into_the_same_chunk(
    index: VectorIndex, embedder: SentenceTransformerEmbedder
) -> None:
    settings = Settings(chunk_size=48, chunk_overlap=8)
    ingestor = build_ingestor(settings, index, embedder, "kb", tenant="acme")
    ingestor.ingest([DOC])
    chunks = ingestor.chunker.chunk(DOC)
    assert len(chunks) > 1 and any(c.headings for c in chunks)

    payloads = index.payloads("kb", index.point_ids("kb"))
    stored = sorted(
        (StoredChunk.from_payload(p) for p in payloads.values()), key=lambda s: s.chunk_index
    )
    doc_hash = DOC.content_hash(ingestor.chunker.signature)
    assert len(stored) == len(chunks)
    for got, chunk in zip(stored, chunks, strict=True):
        assert (got.tenant, got.chunk_count, got.doc_hash) == ("acme", len(chunks), doc_hash)
        assert got.headings == list(chunk.headings)
        for name in (
            "doc_id",
            "chunk_index",
            "text",
            "title",
            "source",
            "start",
            "end",
            "metadata",
        ):
            assert getattr(got, name) == getattr(chunk, name), name
        # Sentence starts, stored as one string, come back as the ints they were.
        assert got.sentences == list(chunk.sentences) and got.sentences
        assert all(type(s) is int for s in got.sentences)
    for p in payloads.values():
        assert list(p) == [name for name in FIELDS if name in p] and payload_problem(p) is None
        assert ("headings" in p) == bool(p.get("headings"))

    # Retrieval hands out exactly the stored fields.
    result = HybridRetriever(index, embedder, settings).retrieve(
        SearchParams("health check", collection="kb", top_k=len(chunks), tenant="acme")
    )
    assert result.chunks
    by_index = {s.chunk_index: asdict(s) for s in stored}
    for hit in result.chunks:
        expected = by_index[hit.chunk_index]
        assert {k: v for k, v in asdict(hit).items() if k in expected} == {
            k: v for k, v in expected.items() if k in asdict(hit)
        }


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"doc_hash": None}, "payload field 'doc_hash' is missing or not str"),
        ({"chunk_index": "3"}, "payload field 'chunk_index' is missing or not int"),
        ({"text": 42}, "payload field 'text' is missing or not str"),
    ],
)
def test_a_malformed_payload_is_reported(change: dict[str, Any], problem: str) -> None:
    payload: dict[str, Any] = {
        "doc_id": "d",
        "chunk_index": 0,
        "chunk_count": 1,
        "doc_hash": "h",
        "text": "t",
    }
    assert payload_problem(payload) is None
    payload.update(change)
    payload = {k: v for k, v in payload.items() if v is not None}
    assert payload_problem(payload) == problem


def test_old_payloads_read_leniently() -> None:
    stored = StoredChunk.from_payload({"doc_id": "d", "chunk_index": 2, "text": "t"})
    assert (stored.tenant, stored.title, stored.headings, stored.metadata) == (
        "default",
        "",
        [],
        {},
    )
    assert (stored.chunk_index, stored.start, stored.end) == (2, 0, 0)
    assert stored.sentences is None  # written before sentences were stored: readers split


@pytest.mark.parametrize(
    ("sentences", "read"),
    [
        ([0, 5], [0, 5]),
        ([0.0, 5.0], [0, 5]),  # an engine that hands integers back as floats
        ([], []),  # a piece of an over-long sentence: no whole sentence
        ([0, 5, 5], None),  # not increasing
        ([0, 11], None),  # outside the text
        ([0, 2.5], None),
        ([True], None),
        ("0 5", [0, 5]),  # as written since 2026-11-28
        ("", []),
        ("0,5", None),
        ("0 five", None),
        ("0 11", None),
        (None, None),
    ],
)
def test_stored_sentence_starts_are_used_only_when_usable(sentences: Any, read: Any) -> None:
    payload = {"doc_id": "d", "chunk_index": 0, "text": "One. Two.!", "sentences": sentences}
    assert StoredChunk.from_payload(payload).sentences == read


def test_a_payload_leaves_out_empty_fields_and_packs_sentence_starts() -> None:
    """Every stored value costs a conversion in the engine's binding, the bound on Edge's write
    rate: what reads back as empty is not written, and the starts are one string."""
    bare = StoredChunk("default", "d", 0, 1, "h", "One. Two.", "T", [], "s", 0, 9, {}, [0, 5])
    payload = bare.to_payload()
    assert "headings" not in payload and "metadata" not in payload
    assert payload["sentences"] == "0 5"
    assert StoredChunk.from_payload(payload) == bare
    full = StoredChunk("acme", "d", 1, 2, "h", "One.", "T", ["A"], "s", 4, 8, {"k": 1}, [])
    assert list(full.to_payload()) == list(FIELDS) and full.to_payload()["sentences"] == ""
    assert StoredChunk.from_payload(full.to_payload()) == full
    unknown = StoredChunk("default", "d", 0, 1, "h", "t", "", [], "", 0, 1, {}, None)
    assert "sentences" not in unknown.to_payload()
    assert StoredChunk.from_payload(unknown.to_payload()) == unknown


def test_indexed_fields_are_payload_fields() -> None:
    for names in (KEYWORD_FIELDS, INTEGER_FIELDS, FILTERABLE_FIELDS, STATE_FIELDS):
        assert set(names) <= set(FIELDS)
