"""Cross-encoder reranking with a real (tiny, test-built) CrossEncoder loaded from a local path."""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.tiny_models import save_tiny_bert

from ingest.documents import Document
from ingest.embedding import SentenceTransformerEmbedder
from ingest.index import EdgeIndex
from ingest.settings import Settings
from service.api.app import create_app
from service.pipeline import NotConfigured, RagPipeline
from service.rerank import CrossEncoderReranker, reorder
from service.retrieval import RetrievedChunk, SearchParams

DOCS = [
    Document(f"d{i}", f"Document {i} is about topic {i % 3}: " + "words " * (i + 1))
    for i in range(12)
]


@pytest.fixture(scope="module")
def cross_encoder_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small BERT cross-encoder saved to disk, built here since none ships offline."""
    return save_tiny_bert(tmp_path_factory.mktemp("cross-encoder"), classifier=True)


def chunk(rank: int, text: str) -> RetrievedChunk:
    return RetrievedChunk(rank, 1.0 / rank, f"id{rank}", f"d{rank}", 0, "", text, "", 0, len(text))


def test_reorder_renumbers_and_cuts() -> None:
    chunks = [chunk(1, "a"), chunk(2, "b"), chunk(3, "c")]
    out = reorder(chunks, [0.1, 0.9, 0.5], top_k=2)
    assert [(c.rank, c.doc_id, c.score) for c in out] == [(1, "d2", 0.9), (2, "d3", 0.5)]


def test_cross_encoder_orders_by_its_own_scores(cross_encoder_path: Path) -> None:
    from sentence_transformers import CrossEncoder

    chunks = [chunk(i, f"passage number {i} " * i) for i in range(1, 8)]
    reranker = CrossEncoderReranker(str(cross_encoder_path), batch_size=3, max_length=64)
    out = reranker.rerank("which passage?", chunks, top_k=4)
    scores = CrossEncoder(str(cross_encoder_path), max_length=64).predict(
        [("which passage?", c.text) for c in chunks]
    )
    expected = sorted(range(len(chunks)), key=lambda i: -scores[i])[:4]
    assert [c.doc_id for c in out] == [chunks[i].doc_id for i in expected]
    assert [c.rank for c in out] == [1, 2, 3, 4]


def test_pipeline_reranks_candidates_and_reports_cost(
    tmp_path: Path, embedder: SentenceTransformerEmbedder, cross_encoder_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        reranker="cross-encoder",
        reranker_model=str(cross_encoder_path),
        rerank_candidates=10,
    )
    pipeline = RagPipeline.from_settings(settings, index=EdgeIndex(tmp_path), embedder=embedder)
    reranker = pipeline.reranker  # built from the settings, as the service builds it
    assert isinstance(reranker, CrossEncoderReranker)
    try:
        pipeline.ingest(DOCS, "c")
        plain = pipeline.search(SearchParams("topic 1 words", collection="c", top_k=10))
        reranked = pipeline.search(
            SearchParams("topic 1 words", collection="c", top_k=3, rerank=True)
        )
        assert "rerank_ms" in reranked.timings and "rerank_ms" not in plain.timings
        expected = reranker.rerank("topic 1 words", plain.chunks, top_k=3)  # same 10 candidates
        assert [c.id for c in reranked.chunks] == [c.id for c in expected]
        with TestClient(create_app(pipeline)) as client:
            response = client.post(
                "/v1/query", json={"query": "topic 2", "collection": "c", "top_k": 2}
            )
            assert response.status_code == 200 and "rerank_ms" in response.json()["timings"]
            off = client.post(
                "/v1/search", json={"query": "topic 2", "collection": "c", "rerank": False}
            )
            assert "rerank_ms" not in off.json()["timings"]
    finally:
        pipeline.close()


def test_rerank_without_reranker_is_refused(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    pipeline = RagPipeline.from_settings(
        Settings(data_dir=tmp_path), index=EdgeIndex(tmp_path), embedder=embedder
    )
    try:
        pipeline.ingest(DOCS[:2], "c")
        with pytest.raises(NotConfigured):
            pipeline.search(SearchParams("x", collection="c", rerank=True))
        with TestClient(create_app(pipeline)) as client:
            response = client.post(
                "/v1/search", json={"query": "x", "collection": "c", "rerank": True}
            )
        assert (
            response.status_code == 422 and "no reranker is configured" in response.json()["detail"]
        )
    finally:
        pipeline.close()


def test_ladder_measures_the_reranker_row_when_configured(
    tmp_path: Path, embedder: SentenceTransformerEmbedder, cross_encoder_path: Path
) -> None:
    from eval.datasets import load_beir
    from eval.ladder import run_ladder

    settings = Settings(data_dir=tmp_path, reranker="cross-encoder", rerank_candidates=20)
    pipeline = RagPipeline.from_settings(
        settings,
        index=EdgeIndex(tmp_path),
        embedder=embedder,
        reranker=CrossEncoderReranker(str(cross_encoder_path)),
    )
    try:
        rows = run_ladder(pipeline, load_beir(Path(__file__).parent / "fixtures" / "mini_beir"))
    finally:
        pipeline.close()
    by_name = {r.name: r for r in rows}
    row = by_name["+reranker"]
    # an untrained cross-encoder: its nDCG is arbitrary, but the row must be measured like the rest
    assert row.skipped is None and row.description.endswith(f"by {cross_encoder_path}"), row
    assert set(row.metrics) == set(by_name["hybrid-rrf"].metrics), row.metrics
    assert row.delta == round(row.metrics["ndcg@10"] - by_name["dense"].metrics["ndcg@10"], 4)
    assert row.latency_p50_ms is not None and row.latency_p50_ms > 0


class ReversingReranker:
    """Puts its candidates in reverse order and records how many it was given."""

    name = "reversing"

    def __init__(self) -> None:
        self.seen: list[int] = []

    def rerank(self, query: str, chunks: list[RetrievedChunk], top_k: int) -> list[RetrievedChunk]:
        self.seen.append(len(chunks))
        return reorder(chunks, [float(c.rank) for c in chunks], top_k)


def test_eval_reranks_what_a_request_reranks(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    """The eval asks for a deep list (for Recall@100), but its reranker must see the
    rerank_candidates a request's reranker sees, with the rest following in retrieval order."""
    from eval.datasets import load_beir
    from eval.retrieval import run_queries

    settings = Settings(data_dir=tmp_path, rerank_candidates=4, top_k=3)
    reranker = ReversingReranker()
    pipeline = RagPipeline.from_settings(
        settings, index=EdgeIndex(tmp_path), embedder=embedder, reranker=reranker
    )
    data = load_beir(Path(__file__).parent / "fixtures" / "mini_beir")
    try:
        pipeline.ingest(data.corpus, "mini")
        run, _ = run_queries(pipeline, data, "mini", "hybrid-dbsf", rerank=True)
        plain, _ = run_queries(pipeline, data, "mini", "hybrid-dbsf")
        qid, text = next(iter(data.queries.items()))
        served = pipeline.search(SearchParams(text, collection="mini", top_k=4, rerank=True))
    finally:
        pipeline.close()
    assert reranker.seen and set(reranker.seen) == {4}  # never the eval's 300
    order = sorted(run[qid], key=lambda d: -run[qid][d])
    head = list(dict.fromkeys(c.doc_id for c in served.chunks))
    assert order[: len(head)] == head  # the reranked head, as served
    assert order != sorted(plain[qid], key=lambda d: -plain[qid][d])  # it was reranked
    # the tail keeps every document the plain deep list found, in retrieval order
    assert set(run[qid]) == set(plain[qid])
    tail = [d for d in sorted(plain[qid], key=lambda d: -plain[qid][d]) if d not in head]
    assert order[len(head) :] == tail
