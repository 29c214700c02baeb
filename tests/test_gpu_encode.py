"""Fast bulk encoding (ingest/gpu_encode.py) on CPU: the same vectors as plain ``encode``, in
the caller's order after length sorting, with and without tokenizer worker processes; and
bench/gpu_ingest.py end to end with a tiny batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from support.bench_runner import SCIFACT, run_bench

from ingest.build import build_chunker, build_ingestor
from ingest.documents import Document
from ingest.embedding import DEFAULT_MODEL, SentenceTransformerEmbedder, resolve_model_path
from ingest.gpu_encode import FastEmbedder, FastEncoder, length_order
from ingest.index import EdgeIndex, SearchQuery
from ingest.settings import Settings
from ingest.sparse import Bm25Encoder

# Lengths from one word to past the model's 256-token window, with a duplicate and an empty
# text, in no order: length sorting must not leak into the result's order.
TEXTS = [
    "Cats purr.",
    "Qdrant stores dense and sparse vectors side by side. " * 8,
    "",
    "A medium sentence about retrieval augmented generation.",
    "word " * 400,
    "Cats purr.",
    "Dogs bark at the mail carrier every single morning.",
    "x",
    "BM25 scores terms by frequency and rarity. " * 3,
]


@pytest.fixture(scope="module")
def model() -> SentenceTransformer:
    return SentenceTransformer(resolve_model_path(DEFAULT_MODEL), device="cpu")


def _plain(model: SentenceTransformer, texts: list[str]) -> np.ndarray:
    return np.asarray(model.encode(texts, normalize_embeddings=True, convert_to_numpy=True))


def test_length_order_is_longest_first_and_stable() -> None:
    order = length_order(["bb", "a", "ccc", "dd", ""])
    assert order.tolist() == [2, 0, 3, 1, 4]
    assert length_order([]).tolist() == []


@pytest.mark.parametrize("workers", [0, 1])
def test_vectors_equal_plain_encode_in_the_callers_order(
    model: SentenceTransformer, workers: int
) -> None:
    encoder = FastEncoder(model, batch_size=2, workers=workers)
    vectors = encoder.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, _plain(model, TEXTS), atol=1e-5)
    # One at a time, nothing to sort: each row is its own text's vector.
    for i in (0, 4, 7):
        np.testing.assert_allclose(vectors[i], _plain(model, [TEXTS[i]])[0], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # The duplicate, padded in another batch: equal up to float noise.
    np.testing.assert_allclose(vectors[0], vectors[5], atol=1e-6)


def test_batches_come_longest_first_and_cover_every_text(model: SentenceTransformer) -> None:
    encoder = FastEncoder(model, batch_size=4)
    batches = list(encoder.batches(TEXTS))
    assert [len(p) for p, _, _ in batches] == [4, 4, 1]
    assert all(extra is None for _, _, extra in batches)
    positions = np.concatenate([p for p, _, _ in batches])
    assert sorted(positions.tolist()) == list(range(len(TEXTS)))
    lengths = [len(TEXTS[p]) for p in positions]
    assert lengths == sorted(lengths, reverse=True)
    assert list(encoder.batches([])) == []
    assert encoder.encode([]).shape == (0, 384)


@pytest.mark.parametrize("workers", [0, 1])
def test_side_work_rides_along_with_each_batch(model: SentenceTransformer, workers: int) -> None:
    bm25 = Bm25Encoder()
    encoder = FastEncoder(model, batch_size=4, workers=workers)
    seen = 0
    for positions, vectors, sparse in encoder.batches(TEXTS, side=bm25.embed_documents):
        assert len(sparse) == len(positions) == len(vectors)
        # each BM25 vector belongs to the text at the same position, in a worker or not
        assert sparse == [bm25.embed_document(TEXTS[p]) for p in positions]
        seen += len(positions)
    assert seen == len(TEXTS)


def test_cpu_stays_fp32_and_tokenizes_in_process(model: SentenceTransformer) -> None:
    encoder = FastEncoder(model, fp16=True)
    assert not encoder.fp16 and encoder.workers == 0
    assert next(model.parameters()).dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"workers": -1}, "workers"),
        ({"prefetch": 0}, "prefetch"),
    ],
)
def test_bad_arguments_are_refused(
    model: SentenceTransformer, kwargs: dict[str, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        FastEncoder(model, **kwargs)  # type: ignore[arg-type]


def test_the_pipeline_ingests_with_the_fast_embedder(
    model: SentenceTransformer, embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    fast = FastEmbedder(DEFAULT_MODEL, model, batch_size=3)
    # The embedder the settings build (whatever its backend) cuts the same chunks.
    assert (fast.dimension, fast.max_tokens) == (embedder.dimension, embedder.max_tokens)
    np.testing.assert_allclose(fast.embed_documents(TEXTS), _plain(model, TEXTS), atol=1e-5)
    np.testing.assert_allclose(fast.embed_query("cats"), _plain(model, ["cats"])[0], atol=1e-5)
    settings = Settings(data_dir=tmp_path / "data")
    assert build_chunker(settings, fast).signature == build_chunker(settings, embedder).signature
    index = EdgeIndex(settings.data_dir)
    try:
        docs = [Document(f"d{i}", text) for i, text in enumerate(TEXTS) if text]
        report = build_ingestor(settings, index, fast, "c").ingest(docs)
        assert report.ok and report.chunks_written >= len(docs)
        manifest = index.manifest("c")
        assert manifest is not None and manifest.model == DEFAULT_MODEL
        bm25 = Bm25Encoder(manifest.bm25)
        text = "Dogs bark at the mail carrier"
        query = SearchQuery(dense=fast.embed_query(text), sparse=bm25.embed_query(text), limit=1)
        assert index.search("c", query)[0].payload["doc_id"] == "d6"
    finally:
        index.close()


@pytest.mark.slow
@pytest.mark.skipif(not SCIFACT.is_dir(), reason="needs ../shared/datasets/scifact")
def test_gpu_ingest_bench_runs_end_to_end_on_cpu(tmp_path: Path) -> None:
    args = ["--device", "cpu", "--chunks", "24", "--batch-size", "8", "--pipeline-chunks", "12"]
    args += ["--chunk-workers", "2", "--switch-us", "100"]
    result = run_bench("gpu_ingest", *args, out=tmp_path)
    assert result["chunks"] == 24 and result["fp16"] is False
    rates = result["chunks_per_s"]
    assert set(rates) == {
        "chunking_one_core",
        "chunking_pool",
        "a_ceiling",
        "b_plain_encode",
        "workers_tokenize_bm25",
        "encode_only",
        "writes_only",
        "c_encode_upsert",
        "writes_only_in_process",
        "c_encode_upsert_in_process",
        "writes_only_in_process_switch_100us",
        "c_encode_upsert_in_process_switch_100us",
        "d_pipeline",
    }
    assert all(rate > 0 for rate in rates.values())
    assert result["ratios_to_ceiling"]["a_ceiling"] == 1.0
