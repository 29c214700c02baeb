"""BM25 as sparse vectors, scored inside Qdrant.

Documents get BM25 term-frequency weights ``tf·(k1+1) / (tf + k1·(1-b+b·len/avg_len))``; queries get
weight 1 per distinct term; the collection's sparse vector uses Qdrant's IDF modifier, so the dot
product Qdrant computes is the BM25 score with IDF kept current by the engine (and by every node of
a cluster). ``qdrant_edge.Bm25`` does the tokenising (lowercase, stopwords, Snowball stemmer) and
matches the BM25 inference of Qdrant server, so both index adapters see identical vectors.

Example::

    bm25 = Bm25Encoder(Bm25Params(avg_len=120))
    doc = bm25.embed_document("Cats chase mice")      # SparseVec(indices=[...], values=[...])
    query = bm25.embed_query("cat")
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import qdrant_edge


@dataclass(frozen=True)
class SparseVec:
    indices: list[int]
    values: list[float]


@dataclass(frozen=True)
class Bm25Params:
    k1: float = 0.9
    b: float = 0.4
    avg_len: float = 256.0
    language: str = "english"

    def as_dict(self) -> dict[str, float | str]:
        return asdict(self)


class Bm25Encoder:
    """Turns text into BM25 sparse vectors with the same tokenizer for documents and queries."""

    def __init__(self, params: Bm25Params | None = None) -> None:
        self.params = params or Bm25Params()
        self._model = qdrant_edge.Bm25(self._config(self.params))

    @staticmethod
    def _config(params: Bm25Params) -> qdrant_edge.Bm25Config:
        return qdrant_edge.Bm25Config(
            k=params.k1, b=params.b, avg_len=params.avg_len, language=params.language
        )

    def embed_document(self, text: str) -> SparseVec:
        vec = self._model.embed_document(text)
        return SparseVec(list(vec.indices), list(vec.values))

    def embed_documents(self, texts: list[str]) -> list[SparseVec]:
        return [self.embed_document(t) for t in texts]

    def embed_query(self, text: str) -> SparseVec:
        vec = self._model.embed_query(text)
        return SparseVec(list(vec.indices), list(vec.values))


def measure_avg_len(texts: list[str], language: str = "english") -> float:
    """Average length in BM25 tokens, counted with the very tokenizer BM25 uses.

    With b=0 and a huge k1 the document weight tf·(k1+1)/(tf+k1) equals tf to within tf/k1, so the
    sum of a document vector's values is its token count.
    """
    if not texts:
        raise ValueError("need at least one text to measure the average length")
    counter = qdrant_edge.Bm25(qdrant_edge.Bm25Config(k=1e9, b=0.0, language=language))
    lengths = [sum(counter.embed_document(t).values) for t in texts]
    return max(1.0, round(sum(lengths) / len(lengths), 2))
