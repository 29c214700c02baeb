"""Query transforms written by the LLM: multi-query expansion and HyDE.

* Multi-query: the LLM writes N rephrasings; the question and each rephrasing are searched, and
  the result lists are fused by reciprocal-rank fusion (Cormack et al., 2009; k = 60).
* HyDE (Gao et al., 2022): the LLM writes a hypothetical passage that answers the question; the
  mean of its embedding and the question's drives the dense leg, while BM25 keeps the question's
  own words (a made-up passage has made-up terms).

Example::

    queries = expand_queries(llm, "how do cats purr?", 3)
    passage = hypothetical_passage(llm, "how do cats purr?")
    result = retrieve_with_hyde(llm, embedder, retriever, params)   # HyDE's dense leg
    fuse_rephrasings(llm, retriever, params, 3, result)             # + 3 rephrasings, fused
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ingest.embedding import Embedder

from .llm import ChatLLM, LLMError
from .retrieval import RetrievalResult, RetrievedChunk, Retriever, SearchParams

MULTI_QUERY_PROMPT = """Write {n} different search queries that would find documents answering \
the question below. Vary the wording and use synonyms. Write one query per line, with no \
numbering and no other text.

Question: {question}"""

HYDE_PROMPT = """Write a short passage (3 to 5 sentences) that answers the question below, in \
the style of a reference document. Write only the passage.

Question: {question}"""

_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.):]|query\s*\d*:)\s*", re.IGNORECASE)


def parse_queries(text: str, question: str, n: int) -> list[str]:
    """Rephrasings from the LLM's lines: bullets, numbers and quotes removed, duplicates of each
    other or of the question dropped, at most ``n``."""
    seen = {question.strip().lower()}
    queries: list[str] = []
    for line in text.splitlines():
        query = _BULLET.sub("", line).strip().strip('"').strip()
        if len(query) < 3 or query.lower() in seen or query.endswith(":"):
            continue
        seen.add(query.lower())
        queries.append(query)
        if len(queries) == n:
            break
    return queries


def expand_queries(llm: ChatLLM, question: str, n: int) -> list[str]:
    reply = llm.complete(
        [{"role": "user", "content": MULTI_QUERY_PROMPT.format(n=n, question=question)}],
        max_tokens=48 * n,
    )
    return parse_queries(reply.text, question, n)


def hypothetical_passage(llm: ChatLLM, question: str) -> str:
    reply = llm.complete(
        [{"role": "user", "content": HYDE_PROMPT.format(question=question)}], max_tokens=200
    )
    return reply.text


def hyde_vector(question_vector: np.ndarray, passage_vector: np.ndarray) -> np.ndarray:
    """Mean of the question's and the passage's embeddings, normalised (as in the HyDE paper)."""
    mean = (np.asarray(question_vector) + np.asarray(passage_vector)) / 2
    norm = np.linalg.norm(mean)
    return mean / norm if norm else mean


def rrf_fuse(
    lists: Sequence[Sequence[RetrievedChunk]], limit: int, k: int = 60
) -> list[RetrievedChunk]:
    """Reciprocal-rank fusion of several ranked lists of chunks, by chunk id."""
    scores: dict[str, float] = {}
    first: dict[str, RetrievedChunk] = {}
    for chunks in lists:
        for position, chunk in enumerate(chunks, start=1):
            scores[chunk.id] = scores.get(chunk.id, 0.0) + 1.0 / (k + position)
            first.setdefault(chunk.id, chunk)
    order = sorted(scores, key=lambda cid: -scores[cid])[:limit]
    return [
        replace(first[cid], rank=rank, score=round(scores[cid], 6))
        for rank, cid in enumerate(order, start=1)
    ]


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)


def retrieve_with_hyde(
    llm: ChatLLM, embedder: Embedder, retriever: Retriever, params: SearchParams
) -> RetrievalResult:
    """Retrieve with HyDE's vector in the dense leg. The question is embedded once, here, and the
    retriever reuses that vector; when the LLM fails, the dense leg is the question's own and the
    result carries a warning."""
    t = time.perf_counter()
    question_vector = embedder.embed_query(params.query)
    timings = {"embed_ms": _ms(t)}
    t = time.perf_counter()
    dense_vector, passage, warning = None, None, None
    try:
        passage = hypothetical_passage(llm, params.query)
        dense_vector = hyde_vector(question_vector, embedder.embed_documents([passage])[0])
    except LLMError as exc:
        warning = f"HyDE skipped: {exc.reason}"
    timings["hyde_ms"] = _ms(t)
    result = retriever.retrieve(params, dense_vector=dense_vector, query_vector=question_vector)
    result.timings = {**timings, **result.timings}
    if passage is not None:
        result.transforms["hyde_passage"] = passage
    if warning:
        result.warnings.append(warning)
    return result


def fuse_rephrasings(
    llm: ChatLLM, retriever: Retriever, params: SearchParams, n: int, result: RetrievalResult
) -> None:
    """Search ``n`` LLM rephrasings of ``params.query`` too and RRF-fuse them into ``result``
    (``params.top_k`` chunks); when the LLM fails, ``result`` keeps its chunks and a warning."""
    t = time.perf_counter()
    queries: list[str] = []
    try:
        queries = expand_queries(llm, params.query, n)
    except LLMError as exc:
        result.warnings.append(f"multi-query skipped: {exc.reason}")
    result.timings["expand_ms"] = _ms(t)
    result.transforms["queries"] = queries
    if queries:
        t = time.perf_counter()
        lists = [result.chunks]
        lists += [retriever.retrieve(replace(params, query=q)).chunks for q in queries]
        result.chunks = rrf_fuse(lists, params.top_k)
        result.timings["multi_query_search_ms"] = _ms(t)
