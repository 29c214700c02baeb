"""Chunking in worker processes (ingest/chunk_pool.py): the same chunks, in the same order, as
the chunker in-process, and an ingest with ``chunk_workers`` writes the same points."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from ingest.build import build_chunker, build_ingestor, chunk_workers
from ingest.chunk_pool import ChunkPool
from ingest.documents import Document
from ingest.embedding import SentenceTransformerEmbedder
from ingest.gpu_encode import gpu_helper_processes
from ingest.index import EdgeIndex
from ingest.pipeline import Ingestor
from ingest.settings import Settings
from ingest.sparse import Bm25Encoder, Bm25Params

DOCS = [
    Document("intro", "# Intro\nGrounded answers from your documents. It cites them.\n" * 30),
    Document("short", "One sentence.", title="Short"),
    Document("blank", "   "),
    Document(
        "list", "\n".join(f"- item {i} of a long list, Dr. Smith et al. agreed." for i in range(80))
    ),
    Document("long-word", "x" * 5000),
] + [Document(f"n{i}", f"Note {i}. " + "Qdrant stores vectors. " * (i % 7 + 1)) for i in range(40)]


def test_pool_chunks_equal_in_process_chunks(embedder: SentenceTransformerEmbedder) -> None:
    chunker = build_chunker(Settings(chunk_size=64, chunk_overlap=16), embedder)
    expected = [chunker.chunk(doc) for doc in DOCS]
    with ChunkPool(chunker, workers=2) as pool:
        assert pool.chunk_many(DOCS) == expected
        assert pool.chunk_many([]) == []
    assert sum(map(len, expected)) > len(DOCS)  # many-chunk documents were in the set


def test_pool_bm25_vectors_equal_in_process_ones(embedder: SentenceTransformerEmbedder) -> None:
    chunker = build_chunker(Settings(chunk_size=64, chunk_overlap=16), embedder)
    texts = [c.embed_text for doc in DOCS for c in chunker.chunk(doc)]
    params = [Bm25Params(avg_len=40), Bm25Params(k1=1.2, b=0.75, avg_len=90)]
    with ChunkPool(chunker, workers=2) as pool:
        for p in params:  # each worker keeps an encoder per collection's parameters
            assert pool.bm25_many(p, texts) == Bm25Encoder(p).embed_documents(texts)
        assert pool.bm25_many(params[0], texts[:1]) == Bm25Encoder(params[0]).embed_documents(
            texts[:1]
        )
        assert pool.bm25_many(params[0], []) == []
    assert len(texts) > 8 * 2  # several tasks per worker


def test_bad_worker_count_is_refused(embedder: SentenceTransformerEmbedder) -> None:
    with pytest.raises(ValueError, match="workers"):
        ChunkPool(build_chunker(Settings(), embedder), workers=0)


def _points(index: EdgeIndex, collection: str) -> dict[str, tuple[object, ...]]:
    """Every point's payload and BM25 vector, by id."""
    points, offset = index.scroll_points(collection, limit=10_000)
    assert offset is None
    return {
        p.id: (p.payload, p.sparse.indices, [round(v, 5) for v in p.sparse.values]) for p in points
    }


def test_ingest_with_chunk_workers_writes_the_same_points(
    embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    reports = {}
    payloads = {}
    for workers in (0, 2):
        settings = Settings(
            data_dir=tmp_path / f"w{workers}",
            chunk_size=64,
            chunk_overlap=16,
            ingest_batch_docs=16,
            ingest_chunk_workers=workers,
        )
        index = EdgeIndex(settings.data_dir)
        try:
            ingestor = build_ingestor(settings, index, embedder, "c")
            assert ingestor.chunk_workers == workers
            reports[workers] = ingestor.ingest(DOCS)
            payloads[workers] = _points(index, "c")
            again = ingestor.ingest(DOCS)  # nothing changed: nothing is chunked or written
            assert again.unchanged == len(DOCS) - 1 and again.chunks_written == 0
        finally:
            index.close()
    first, second = reports[0], reports[2]
    assert (first.added, first.chunks_written) == (second.added, second.chunks_written)
    assert first.added == len(DOCS) - 1
    assert [s.doc_id for s in first.skipped] == [s.doc_id for s in second.skipped] == ["blank"]
    assert payloads[0] == payloads[2] and len(payloads[0]) == first.chunks_written


def test_chunk_workers_default_to_the_gpu_helpers_on_a_gpu_bulk_ingest_only(
    embedder: SentenceTransformerEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_a_gpu = SimpleNamespace(on_gpu=True)
    assert chunk_workers(Settings(), on_a_gpu, bulk=True) == gpu_helper_processes() >= 1
    # The service's per-request and per-task ingests would each start a pool: never by default.
    assert chunk_workers(Settings(), on_a_gpu, bulk=False) == 0
    assert chunk_workers(Settings(ingest_chunk_workers=0), on_a_gpu, bulk=True) == 0
    assert chunk_workers(Settings(), embedder, bulk=True) == 0  # on CPU
    assert chunk_workers(Settings(ingest_chunk_workers=3), embedder, bulk=False) == 3
    import multiprocessing

    monkeypatch.setattr(multiprocessing.current_process(), "daemon", True, raising=False)
    assert chunk_workers(Settings(), on_a_gpu, bulk=True) == 0


def test_negative_chunk_workers_are_refused(
    embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    with pytest.raises(ValueError):
        Settings(ingest_chunk_workers=-1)
    index = EdgeIndex(tmp_path / "d")
    try:
        settings = Settings(data_dir=tmp_path / "d")
        with pytest.raises(ValueError, match="chunk_workers"):
            Ingestor(
                index, embedder, build_chunker(settings, embedder), collection="c", chunk_workers=-1
            )
    finally:
        index.close()


def test_a_daemonic_process_chunks_in_process(
    embedder: SentenceTransformerEmbedder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Celery's prefork workers are daemons, which may not start processes of their own.
    import multiprocessing

    monkeypatch.setattr(multiprocessing.current_process(), "daemon", True, raising=False)
    started: list[int] = []
    monkeypatch.setattr(ChunkPool, "__init__", lambda *a, **k: started.append(1))
    settings = Settings(data_dir=tmp_path / "d", ingest_chunk_workers=2)
    index = EdgeIndex(settings.data_dir)
    try:
        report = build_ingestor(settings, index, embedder, "c").ingest(DOCS[:3])
    finally:
        index.close()
    assert report.added == 2 and not started
    assert "ingest_chunk_workers ignored" in caplog.text
