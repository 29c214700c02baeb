"""Reranking: re-score the top retrieved chunks with a model that reads query and chunk together.

Two rerankers: a cross-encoder and a listwise LLM reranker.

The cross-encoder reranker loads any sentence-transformers ``CrossEncoder`` by hub name or local
path; the recommended production model is ``cross-encoder/ms-marco-MiniLM-L-6-v2`` (set
``GROUNDED_RERANKER=cross-encoder`` and, for an offline machine, ``GROUNDED_RERANKER_MODEL`` to a
local copy). The LLM reranker (``GROUNDED_RERANKER=llm``) asks the configured chat model to
order numbered passages, RankGPT-style (Sun et al., 2023): windows of ``llm_rerank_window``
passages slide from the bottom of the list to the top by ``llm_rerank_step``, so the best passages
bubble up. Retrieval fetches ``rerank_candidates`` chunks, the reranker orders them, the top k
are kept, and ``rerank_ms`` shows the cost.

Example::

    reranker = CrossEncoderReranker("cross-encoder/ms-marco-MiniLM-L-6-v2")
    top = reranker.rerank("what is bm25?", chunks, top_k=5)
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Protocol

from .llm import ChatLLM
from .prompts import sanitise
from .retrieval import RetrievedChunk
from .tokens import TokenCounter


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


LISTWISE_PROMPT = """Rank the {n} passages below by how well they answer the query, most \
relevant first. Reply only with the passage numbers in order, like: [2] > [1] > [3]

Query: {query}

{passages}

Ranking:"""


def parse_ranking(text: str, n: int) -> list[int]:
    """0-based order from a reply like ``[2] > [1] > [3]``: valid numbers in first-seen order,
    then every passage the reply left out, in its original order."""
    seen: list[int] = []
    for match in re.findall(r"\d+", text):
        i = int(match) - 1
        if 0 <= i < n and i not in seen:
            seen.append(i)
    return seen + [i for i in range(n) if i not in seen]


class LLMReranker:
    """Listwise reranking by a chat LLM over sliding windows.

    Args:
        llm: the chat model.
        counter: cuts each passage to ``passage_tokens`` tokens in the prompt.
        window / step: passages per call, and how far the window moves up each time.
    """

    def __init__(
        self,
        llm: ChatLLM,
        counter: TokenCounter,
        *,
        window: int = 20,
        step: int = 10,
        passage_tokens: int = 160,
    ) -> None:
        if window < 2 or step < 1:
            raise ValueError("window must be >= 2 and step >= 1")
        self.llm = llm
        self.counter = counter
        self.window = window
        self.step = step
        self.passage_tokens = passage_tokens
        self.name = "llm-listwise"

    def _order(self, query: str, chunks: list[RetrievedChunk]) -> list[int]:
        # Passage text may imitate the "[2] > [1]" reply format; neutralise it (no fences: they
        # would cost ~30 tokens per passage, and a ranking can only be reordered, not hijacked).
        passages = "\n\n".join(
            f"[{i}] {sanitise(self.counter.truncate(c.text, self.passage_tokens))}"
            for i, c in enumerate(chunks, start=1)
        )
        prompt = LISTWISE_PROMPT.format(n=len(chunks), query=query, passages=passages)
        reply = self.llm.complete(
            [{"role": "user", "content": prompt}], max_tokens=6 * len(chunks) + 8
        )
        return parse_ranking(reply.text, len(chunks))

    def rerank(self, query: str, chunks: list[RetrievedChunk], top_k: int) -> list[RetrievedChunk]:
        order = list(chunks)
        end = len(order)
        while end > 0:
            start = max(0, end - self.window)
            part = order[start:end]
            order[start:end] = [part[i] for i in self._order(query, part)]
            if start == 0:
                break
            end -= self.step
        n = len(order)
        return reorder(order, [float(n - i) / n for i in range(n)], top_k)
