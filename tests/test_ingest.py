"""Ingest keeps a collection equal to the current chunks of the current documents."""

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from ingest.build import build_ingestor
from ingest.documents import Document
from ingest.embedding import SentenceTransformerEmbedder
from ingest.index import IncompatibleCollection, IndexPoint, Manifest, VectorIndex
from ingest.loaders import Document as LoadedDocument
from ingest.loaders import iter_documents, stale_documents
from ingest.pipeline import Ingestor
from ingest.settings import Settings

LONG = " ".join(f"Paragraph sentence {i} about hybrid retrieval and BM25." for i in range(60))


def docs(n: int = 6) -> list[Document]:
    out = [
        Document(f"doc{i}", f"Document {i} talks about topic {i}. " * 3, title=f"T{i}")
        for i in range(n)
    ]
    out.append(Document("long", LONG, title="Long"))
    return out


def chunk_ids(index: VectorIndex, collection: str = "c") -> list[tuple[str, int]]:
    states = index.document_states(collection, list(index.document_sources(collection)))
    return sorted((doc_id, i) for doc_id, s in states.items() for i in s.chunk_indexes)


@pytest.fixture
def ingestor(index: VectorIndex, embedder: SentenceTransformerEmbedder) -> Ingestor:
    settings = Settings(chunk_size=64, chunk_overlap=8, ingest_batch_docs=3)
    return build_ingestor(settings, index, embedder, "c")


def test_reingest_is_a_no_op(ingestor: Ingestor) -> None:
    first = ingestor.ingest(docs())
    assert (first.added, first.unchanged) == (7, 0) and first.chunks_written > 7
    count = ingestor.index.count("c")
    second = ingestor.ingest(docs())
    assert (second.added, second.updated, second.unchanged, second.chunks_written) == (0, 0, 7, 0)
    assert ingestor.index.count("c") == count == first.chunks_written


def test_changed_document_replaces_only_its_chunks(ingestor: Ingestor) -> None:
    ingestor.ingest(docs())
    before = chunk_ids(ingestor.index)
    assert len([c for c in before if c[0] == "long"]) > 1
    shorter = [
        d if d.id != "long" else Document("long", "Now a single short sentence.", title="Long")
        for d in docs()
    ]
    report = ingestor.ingest(shorter)
    # only the changed document was written, and its surplus old chunks are gone
    assert (report.updated, report.unchanged, report.chunks_written) == (1, 6, 1)
    after = chunk_ids(ingestor.index)
    assert [c for c in after if c[0] != "long"] == [c for c in before if c[0] != "long"]
    assert [c for c in after if c[0] == "long"] == [("long", 0)]
    assert ingestor.index.count("c") == len(after)


def test_delete_and_model_check(
    ingestor: Ingestor, index: VectorIndex, embedder: SentenceTransformerEmbedder
) -> None:
    ingestor.ingest(docs())
    assert ingestor.delete(["doc1", "nope"]) == 1
    assert "doc1" not in ingestor.document_sources()
    other = Settings(chunk_size=64, chunk_overlap=8)
    clash = build_ingestor(other, index, embedder, "c")
    clash.embedder = other_model = copy.copy(embedder)
    other_model.name, other_model.dimension = "other-model", 768
    with pytest.raises(IncompatibleCollection):
        clash.ingest(docs(1))


def crash_after(monkeypatch: pytest.MonkeyPatch, index: VectorIndex, upserts: int) -> None:
    """The index dies after ``upserts`` upsert calls (a crash mid-ingest)."""
    left = upserts
    upsert, delete_stale_chunks = index.upsert, index.delete_stale_chunks

    def crashing_upsert(collection: str, points: Sequence[IndexPoint]) -> None:
        nonlocal left
        if left == 0:
            raise RuntimeError("simulated crash")
        left -= 1
        upsert(collection, points)

    def crashing_delete(collection: str, current: Mapping[str, str], tenant: str) -> None:
        if left == 0:
            raise RuntimeError("simulated crash before stale chunks were deleted")
        delete_stale_chunks(collection, current, tenant)

    monkeypatch.setattr(index, "upsert", crashing_upsert)
    monkeypatch.setattr(index, "delete_stale_chunks", crashing_delete)


def test_crash_mid_ingest_resumes_without_duplicates(
    index: VectorIndex, embedder: SentenceTransformerEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(chunk_size=64, chunk_overlap=8, ingest_batch_docs=2)
    build_ingestor(settings, index, embedder, "c").ingest(docs())
    # Version 2 of every document; the process dies after the first batch's upsert.
    v2 = [Document(d.id, d.text + " Revised.", title=d.title) for d in docs()]
    with monkeypatch.context() as crashing_index:
        crash_after(crashing_index, index, upserts=1)
        crashing = build_ingestor(settings, index, embedder, "c")
        with pytest.raises(RuntimeError, match="simulated crash"):
            crashing.ingest(v2)
    # Re-run converges: every document current, exactly its chunks, nothing stale.
    report = build_ingestor(settings, index, embedder, "c").ingest(v2)
    assert report.unchanged + report.updated == len(v2)
    salt = build_ingestor(settings, index, embedder, "c").chunker.signature
    states = index.document_states("c", [d.id for d in v2])
    assert all(states[d.id].is_current(d.content_hash(salt)) for d in v2)
    assert index.count("c") == sum(s.points for s in states.values())


def test_prune_removes_documents_whose_files_left(
    tmp_path: Path, index: VectorIndex, embedder: SentenceTransformerEmbedder
) -> None:
    root = tmp_path / "kb"
    root.mkdir()
    for name in ("a", "b", "c"):
        (root / f"{name}.md").write_text(f"# {name}\n\nText of {name}.")
    ingestor = build_ingestor(Settings(), index, embedder, "c")
    loaded = [d for d in iter_documents([root]) if isinstance(d, LoadedDocument)]
    ingestor.ingest(loaded)
    (root / "b.md").unlink()
    (root / "c.md").write_bytes(b"\xff\xfe broken now")  # a broken file is not a deleted one
    items = list(iter_documents([root]))
    current = [d for d in items if isinstance(d, LoadedDocument)]
    failed = {i.source for i in items if not isinstance(i, LoadedDocument)}
    ingestor.ingest(current)
    stale = stale_documents(ingestor.document_sources(), [root], {d.id for d in current}, failed)
    assert stale == ["kb/b.md"]
    ingestor.delete(stale)
    assert set(ingestor.document_sources()) == {"kb/a.md", "kb/c.md"}


def test_chunk_size_change_rechunks(
    index: VectorIndex, embedder: SentenceTransformerEmbedder
) -> None:
    build_ingestor(Settings(chunk_size=256, chunk_overlap=32), index, embedder, "c").ingest(docs())
    report = build_ingestor(Settings(chunk_size=64, chunk_overlap=8), index, embedder, "c").ingest(
        docs()
    )
    assert report.updated == 7


def test_a_collection_another_worker_created_first_is_used(
    index: VectorIndex, embedder: SentenceTransformerEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers of a fleet ingest into a new collection at once: the one that loses the race
    to create it writes into the winner's collection instead of failing."""
    settings = Settings(chunk_size=64, chunk_overlap=8)
    rival = build_ingestor(settings, index, embedder, "c")
    real_create = index.create_collection

    def lose_the_race(name: str, manifest: Manifest) -> None:
        real_create(name, manifest)  # the other worker's create lands first ...
        raise RuntimeError("collection already exists")  # ... and ours is refused

    with monkeypatch.context() as racing:
        racing.setattr(index, "create_collection", lose_the_race)
        report = build_ingestor(settings, index, embedder, "c").ingest(docs(2))
    assert report.added == 3 and chunk_ids(index)
    again = rival.ingest(docs(2))
    assert again.unchanged == 3  # one collection, one copy of each chunk


def test_a_failed_create_that_left_no_collection_is_raised(
    index: VectorIndex, embedder: SentenceTransformerEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(name: str, manifest: Manifest) -> None:
        raise RuntimeError("qdrant refused")

    monkeypatch.setattr(index, "create_collection", refuse)
    with pytest.raises(RuntimeError, match="qdrant refused"):
        build_ingestor(Settings(), index, embedder, "c").ingest(docs(1))
