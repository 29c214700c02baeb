"""Hybrid search finds a relevant document in the top 10 for most test queries.

Uses SciFact from ../shared when present (a subset: the relevant documents of the first 100 test
queries plus 400 others, to keep CI short) and the hand-written mini_beir fixture otherwise. The
eval package measures nDCG on the full corpus.
"""

import csv
import json
from pathlib import Path

from conftest import SHARED

from ingest.build import build_ingestor
from ingest.index import EdgeIndex
from ingest.loaders import LoadFailure, iter_documents
from ingest.settings import Settings
from service.retrieval import HybridRetriever, SearchParams


def load_beir(folder: Path, n_queries: int, n_distractors: int):  # type: ignore[no-untyped-def]
    queries = {
        q["_id"]: q["text"]
        for q in map(json.loads, (folder / "queries.jsonl").read_text().splitlines())
    }
    qrels: dict[str, set[str]] = {}
    with (folder / "qrels" / "test.tsv").open() as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            qrels.setdefault(row["query-id"], set()).add(row["corpus-id"])
    chosen = dict(list(qrels.items())[:n_queries])
    relevant = set().union(*chosen.values())
    docs = [d for d in iter_documents([folder / "corpus.jsonl"]) if not isinstance(d, LoadFailure)]
    others = [d for d in docs if d.id not in relevant][:n_distractors]
    return [d for d in docs if d.id in relevant] + others, {q: queries[q] for q in chosen}, chosen


def test_hybrid_hits_a_relevant_document_for_most_queries(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    folder = SHARED / "scifact"
    if not folder.exists():
        folder = Path(__file__).parent / "fixtures" / "mini_beir"
    docs, queries, qrels = load_beir(folder, n_queries=100, n_distractors=400)
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
    assert rates["hybrid"] >= 0.75, rates
    assert rates["hybrid"] >= min(rates["dense"], rates["sparse"]), rates
