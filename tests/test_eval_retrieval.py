"""Retrieval eval: metrics checked by hand, and the command on the hand-written BEIR fixture."""

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.cli_runner import grounded

from eval.datasets import DatasetError, load_beir
from eval.metrics import ranking_metrics
from eval.retrieval import (
    CHUNK_DEPTH,
    collection_for,
    document_embedder,
    evaluate_retrieval,
    index_corpus,
    prepare_index,
)
from ingest.build import build_chunker
from ingest.documents import Document
from ingest.embedding import SentenceTransformerEmbedder
from ingest.index import EdgeIndex
from ingest.index.base import SearchQuery
from ingest.settings import Settings
from service.pipeline import RagPipeline

FIXTURE = Path(__file__).parent / "fixtures" / "mini_beir"


def test_metrics_match_hand_computed_values() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1, "c": 1}, "q3": {"z": 1}}
    run = {
        "q1": {"x": 3.0, "a": 2.0},  # relevant at rank 2
        "q2": {"b": 5.0, "y": 4.0, "c": 3.0},  # ranks 1 and 3
        # q3 retrieved nothing: counts as zero, not as missing
    }
    m = ranking_metrics(qrels, run)
    ndcg_q1 = 1 / math.log2(3)
    ndcg_q2 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert m["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 3)
    assert m["mrr@10"] == pytest.approx((0.5 + 1.0) / 3)
    assert m["recall@10"] == pytest.approx(2 / 3)
    assert m["map"] == pytest.approx((0.5 + (1 + 2 / 3) / 2) / 3)


def test_mrr_is_cut_at_ten() -> None:
    run = {"q": {f"d{i}": 100.0 - i for i in range(20)}}
    assert ranking_metrics({"q": {"d15": 1}}, run)["mrr@10"] == 0.0
    assert ranking_metrics({"q": {"d15": 1}}, run)["recall@100"] == 1.0


def test_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"corpus\.jsonl"):
        load_beir(tmp_path)


def test_eval_indexes_hold_the_vectors_grounded_ingest_writes(
    tmp_path: Path, embedder: SentenceTransformerEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `grounded ingest` embeds documents on ingest_embedding_backend while queries run on
    # embedding_backend: an eval index built with the query backend measured other vectors.
    settings = Settings(data_dir=tmp_path)
    pipeline = RagPipeline.from_settings(settings, index=EdgeIndex(tmp_path), embedder=embedder)
    alike = RagPipeline(
        Settings(data_dir=tmp_path, ingest_embedding_backend=None), pipeline.index, embedder
    )
    try:
        documents = document_embedder(pipeline)
        assert (embedder.backend, getattr(documents, "backend", None)) == (
            "onnx-int8",
            "openvino-int8",
        )
        assert document_embedder(alike) is embedder
        assert document_embedder(pipeline) is documents  # loaded once per process
        # other vectors, so another cache than an index of query-backend vectors
        assert collection_for("t", tmp_path, pipeline) != collection_for("t", tmp_path, alike)

        doc = Document("d1", "Llamas hum to their young while grazing on the high plains.")
        collection, _ = index_corpus(pipeline, "t", tmp_path, [doc])
        [chunk] = build_chunker(settings, embedder).chunk(doc)
        [hit] = pipeline.index.search(
            collection,
            SearchQuery(
                dense=embedder.embed_query("llamas"), sparse=None, mode="dense", with_dense=True
            ),
        )
        stored = np.asarray(hit.dense)
        served = documents.embed_documents([chunk.embed_text])[0]
        by_queries = embedder.embed_documents([chunk.embed_text])[0]
        assert stored.shape == served.shape
        assert np.allclose(stored, served, atol=1e-5)
        assert not np.allclose(stored, by_queries, atol=1e-5)

        # On a GPU both backends are torch: the queries' model embeds the documents too.
        monkeypatch.setattr(embedder, "backend", "torch")
        gpu = RagPipeline(
            Settings(data_dir=tmp_path, embedding_device="cuda"), alike.index, embedder
        )
        assert document_embedder(gpu) is embedder
    finally:
        pipeline.index.close()


def test_eval_on_fixture_and_cached_index(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    settings = Settings(data_dir=tmp_path)
    pipeline = RagPipeline.from_settings(settings, index=EdgeIndex(tmp_path), embedder=embedder)
    try:
        data = load_beir(FIXTURE)
        collection, first = prepare_index(pipeline, data)
        assert first.added == 12
        _, second = prepare_index(pipeline, data)  # the cache: nothing re-embedded
        assert (second.unchanged, second.chunks_written) == (12, 0)
        report = evaluate_retrieval(
            pipeline, data, ["sparse", "dense", "hybrid-rrf", "hybrid-dbsf"], collection
        )
    finally:
        pipeline.close()
    assert set(report) == {"sparse", "dense", "hybrid-rrf", "hybrid-dbsf"}
    assert report["dense"]["ndcg@10"] > 0.8 and report["hybrid-rrf"]["recall@10"] == 1.0
    # one judged document per query: its AP is 1/rank over the top 100, never below its RR@10
    assert all(r["queries"] == 6 and 0 < r["mrr@10"] <= r["map"] for r in report.values()), report
    assert report["hybrid-rrf"]["map"] == pytest.approx(report["hybrid-rrf"]["mrr@10"])


def test_eval_command_json(tmp_path: Path) -> None:
    proc = grounded(
        "eval",
        "retrieval",
        "--dataset",
        str(FIXTURE),
        "--mode",
        "sparse",
        "--json",
        "--limit",
        "4",
        data_dir=tmp_path,
    )
    data = json.loads(proc.stdout)
    assert list(data["modes"]) == ["sparse"] and data["modes"]["sparse"]["queries"] == 4
    assert {"ndcg@10", "recall@10", "recall@100", "mrr@10", "map"} <= set(data["modes"]["sparse"])


def test_the_eval_prefetches_as_a_served_request_does(
    tmp_path: Path, embedder: SentenceTransformerEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deep result lists (300 chunks) but each leg prefetches what the setting says: DBSF
    normalises over the prefetched lists, so a deeper prefetch would rank differently from what
    a request of the default top_k gets."""
    settings = Settings(data_dir=tmp_path, prefetch_limit=7)
    index = EdgeIndex(tmp_path)
    pipeline = RagPipeline.from_settings(settings, index=index, embedder=embedder)
    seen: list[tuple[int, int]] = []
    search = index.search

    def spy(collection: str, query: Any) -> Any:
        seen.append((query.limit, query.prefetch_limit))
        return search(collection, query)

    try:
        data = load_beir(FIXTURE)
        collection, _ = prepare_index(pipeline, data)
        monkeypatch.setattr(index, "search", spy)
        evaluate_retrieval(pipeline, data, ["hybrid-dbsf"], collection)
    finally:
        pipeline.close()
    assert seen and set(seen) == {(CHUNK_DEPTH, 7)}
