"""Hybrid search finds a relevant document in the top 10 for most test queries.

Always on the hand-written mini_beir fixture; and on SciFact from ../shared when it is there (a
subset: the relevant documents of the first 100 test queries plus 400 others, to keep CI short),
skipped where it is not. The eval package measures nDCG on the full corpus.
"""

from pathlib import Path

import pytest
from support.paths import SHARED

from eval.datasets import load_beir
from ingest.build import build_ingestor
from ingest.documents import Document
from ingest.embedding import SentenceTransformerEmbedder
from ingest.index import EdgeIndex
from ingest.settings import Settings
from service.retrieval import HybridRetriever, SearchParams


def beir_subset(
    folder: Path, n_queries: int, n_distractors: int
) -> tuple[list[Document], dict[str, str], dict[str, set[str]]]:
    """The first ``n_queries`` judged queries, their relevant documents and some others."""
    data = load_beir(folder).limited(n_queries)
    qrels = {q: set(docs) for q, docs in data.qrels.items()}
    relevant: set[str] = set().union(*qrels.values())
    others = [d for d in data.corpus if d.id not in relevant][:n_distractors]
    return [d for d in data.corpus if d.id in relevant] + others, data.queries, qrels


SCIFACT = SHARED / "scifact"


def hit_rates(
    folder: Path, tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> dict[str, float]:
    """Per mode, the share of queries with a relevant document in the top 10."""
    docs, queries, qrels = beir_subset(folder, n_queries=100, n_distractors=400)
    settings = Settings(data_dir=tmp_path)
    index = EdgeIndex(tmp_path)
    try:
        build_ingestor(settings, index, embedder, "beir").ingest(docs)
        retriever = HybridRetriever(index, embedder, settings)
        rates = {}
        for mode in ("hybrid", "dense", "sparse"):
            hits = 0
            for qid, text in queries.items():
                result = retriever.retrieve(
                    SearchParams(text, collection="beir", top_k=10, mode=mode)
                )
                hits += bool({c.doc_id for c in result.chunks} & qrels[qid])
            rates[mode] = hits / len(queries)
    finally:
        index.close()
    return rates


def test_hybrid_hits_a_relevant_document_for_most_fixture_queries(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    rates = hit_rates(Path(__file__).parent / "fixtures" / "mini_beir", tmp_path, embedder)
    assert rates["hybrid"] >= 0.75, rates
    assert rates["hybrid"] >= min(rates["dense"], rates["sparse"]), rates


@pytest.mark.slow
@pytest.mark.skipif(not SCIFACT.exists(), reason=f"SciFact is not at {SCIFACT}")
def test_hybrid_hits_a_relevant_document_for_most_scifact_queries(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    rates = hit_rates(SCIFACT, tmp_path, embedder)
    assert rates["hybrid"] >= 0.75, rates
    assert rates["hybrid"] >= min(rates["dense"], rates["sparse"]), rates
