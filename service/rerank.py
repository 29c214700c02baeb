"""Reranking: re-score the top retrieved chunks with a model that reads query and chunk together.

The cross-encoder reranker loads any sentence-transformers ``CrossEncoder`` by hub name or local
path; the recommended production model is ``cross-encoder/ms-marco-MiniLM-L-6-v2`` (set
``GROUNDED_RERANKER=cross-encoder`` and, for an offline machine, ``GROUNDED_RERANKER_MODEL`` to a
local copy). Retrieval fetches ``rerank_candidates`` chunks, the reranker orders them, the top k
are kept, and ``rerank_ms`` shows the cost.

Example::

    reranker = CrossEncoderReranker("cross-encoder/ms-marco-MiniLM-L-6-v2")
    top = reranker.rerank("what is bm25?", chunks, top_k=5)
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from .retrieval import RetrievedChunk


class Reranker(Protocol):
    name: str

    def rerank(
        self, query: str, chunks: list[RetrievedChunk], top_k: int
    ) -> list[RetrievedChunk]: ...


def reorder(chunks: list[RetrievedChunk], scores: list[float], top_k: int) -> list[RetrievedChunk]:
    """Chunks sorted by the new scores (stable for ties), renumbered from rank 1, cut at top_k."""
    order = sorted(range(len(chunks)), key=lambda i: -scores[i])[:top_k]
    return [
        replace(chunks[i], rank=r, score=float(scores[i])) for r, i in enumerate(order, start=1)
    ]


class CrossEncoderReranker:
    """Batched sentence-transformers ``CrossEncoder`` scoring of (query, chunk) pairs.

    Args:
        model: hub name or local path of a cross-encoder.
        batch_size: pairs per forward pass.
        max_length: tokens per (query, chunk) pair; longer pairs are truncated.
        device: torch device; ``None`` lets sentence-transformers pick.
    """

    def __init__(
        self, model: str, *, batch_size: int = 32, max_length: int = 512, device: str | None = None
    ) -> None:
        if batch_size <= 0 or max_length <= 0:
            raise ValueError("batch_size and max_length must be > 0")
        from sentence_transformers import CrossEncoder

        self.name = model
        self.batch_size = batch_size
        self._model = CrossEncoder(model, max_length=max_length, device=device)

    def rerank(self, query: str, chunks: list[RetrievedChunk], top_k: int) -> list[RetrievedChunk]:
        if not chunks:
            return []
        pairs = [(query, f"{c.title}\n{c.text}" if c.title else c.text) for c in chunks]
        scores = self._model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)
        return reorder(chunks, [float(s) for s in scores], top_k)
