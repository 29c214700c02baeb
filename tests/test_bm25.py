"""BM25 in Qdrant agrees with rank_bm25 given the same tokens.

Qdrant's IDF modifier uses Lucene's idf, ln(1 + (N - n + 0.5) / (n + 0.5)); rank_bm25's
BM25Okapi uses ln((N - n + 0.5) / (n + 0.5)) with a floor for common terms. The term-frequency
part is identical. So the oracle is BM25Okapi with Lucene's idf for exact scores, and plain
BM25Okapi for the ranking.
"""

import math

import pytest
from rank_bm25 import BM25Okapi
from scipy.stats import spearmanr

from ingest.index import IndexPoint, Manifest, SearchQuery, VectorIndex
from ingest.sparse import Bm25Encoder, Bm25Params, measure_avg_len

# Words that survive the English tokenizer unchanged: no stopwords, already stemmed.
CORPUS = [
    "qdrant vector search engine rust",
    "bm25 rank function search engine",
    "dense vector embed model transform",
    "sparse vector bm25 idf modifier qdrant",
    "rust crate cargo build",
    "search relev rank bm25 bm25 bm25",
    "python fastapi servic rest api",
    "hybrid search fusion rrf dense sparse",
    "qdrant edge embed engine disk",
    "token chunk overlap size",
]
QUERIES = ["bm25 search", "qdrant engine", "dense sparse fusion", "rust", "vector qdrant bm25"]


class LuceneIdfBM25(BM25Okapi):
    def _calc_idf(self, nd: dict[str, int]) -> None:  # document frequency of each word
        for word, freq in nd.items():
            self.idf[word] = math.log(1 + (self.corpus_size - freq + 0.5) / (freq + 0.5))


Bm25Collection = tuple[VectorIndex, Bm25Encoder, list[list[str]]]
"""An index with the collection "bm25" of CORPUS, its encoder, and the corpus' tokens."""


@pytest.fixture
def bm25_collection(index: VectorIndex) -> Bm25Collection:
    tokens = [doc.split() for doc in CORPUS]
    avg_len = sum(map(len, tokens)) / len(tokens)
    assert measure_avg_len(CORPUS) == pytest.approx(avg_len)
    encoder = Bm25Encoder(Bm25Params(k1=1.2, b=0.75, avg_len=avg_len))
    index.create_collection("bm25", Manifest("none", 2, encoder.params, "test"))
    index.upsert(
        "bm25",
        [
            IndexPoint(
                f"00000000-0000-0000-0000-{i:012d}",
                [1.0, 0.0],
                encoder.embed_document(text),
                {"tenant": "default", "doc_id": str(i)},
            )
            for i, text in enumerate(CORPUS)
        ],
    )
    return index, encoder, tokens


def _qdrant_scores(index: VectorIndex, encoder: Bm25Encoder, query: str) -> dict[int, float]:
    hits = index.search(
        "bm25",
        SearchQuery(
            dense=None, sparse=encoder.embed_query(query), mode="sparse", limit=len(CORPUS)
        ),
    )
    return {int(h.payload["doc_id"]): h.score for h in hits}


@pytest.mark.parametrize("query", QUERIES)
def test_scores_match_bm25_with_lucene_idf(bm25_collection: Bm25Collection, query: str) -> None:
    index, encoder, tokens = bm25_collection
    oracle = LuceneIdfBM25(tokens, k1=1.2, b=0.75).get_scores(query.split())
    got = _qdrant_scores(index, encoder, query)
    for i, expected in enumerate(oracle):
        assert got.get(i, 0.0) == pytest.approx(expected, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("query", QUERIES)
def test_ranking_agrees_with_bm25okapi(bm25_collection: Bm25Collection, query: str) -> None:
    index, encoder, tokens = bm25_collection
    oracle = BM25Okapi(tokens, k1=1.2, b=0.75).get_scores(query.split())
    got = _qdrant_scores(index, encoder, query)
    matched = [i for i in range(len(CORPUS)) if oracle[i] > 0]
    ours = [got.get(i, 0.0) for i in matched]
    theirs = [oracle[i] for i in matched]
    assert max(matched, key=lambda i: got.get(i, 0.0)) == max(matched, key=lambda i: oracle[i])
    if len(matched) > 2:
        assert spearmanr(ours, theirs).statistic > 0.9


def test_documents_and_queries_share_tokenisation() -> None:
    encoder = Bm25Encoder()
    doc = encoder.embed_document("Running engines RUN quickly")
    query = encoder.embed_query("run engine")
    assert set(query.indices) <= set(doc.indices)
    assert query.values == [1.0] * len(query.indices)
