"""Hard negatives mined with grounded's own retrieval.

A hard negative is a passage the current retrieval ranks high for a question but that is not
known to be relevant. The closest hits are skipped (``skip``): in sparsely judged sets such as
SciFact the top unjudged hits are often relevant but unlabelled, and training them apart from
the question teaches the model wrong (false negatives).

Example::

    rankings = rank_documents(pipeline, collection, data.queries, depth=30)
    negatives = hard_negatives(rankings, data.positives, skip=2, per_query=1)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from service.pipeline import RagPipeline
from service.retrieval import SearchParams, doc_ranking

from ..retrieval import query_vectors


def rank_documents(
    pipeline: RagPipeline,
    collection: str,
    queries: Mapping[str, str],
    *,
    depth: int = 30,
    chunk_depth: int = 100,
) -> dict[str, list[str]]:
    """Each question's top ``depth`` document ids by the pipeline's hybrid retrieval (its
    configured fusion), chunk hits aggregated to documents by their best chunk."""
    vectors = query_vectors(pipeline.embedder, queries)
    rankings: dict[str, list[str]] = {}
    for qid, text in queries.items():
        params = SearchParams(
            text,
            collection=collection,
            top_k=chunk_depth,
            mode="hybrid",
            fusion=pipeline.settings.fusion,
        )
        chunks = pipeline.retriever.retrieve(params, query_vector=vectors[qid]).chunks
        scores = doc_ranking(chunks)
        rankings[qid] = sorted(scores, key=lambda d: -scores[d])[:depth]
    return rankings


def hard_negatives(
    rankings: Mapping[str, Sequence[str]],
    positives: Mapping[str, Sequence[str]],
    *,
    skip: int = 2,
    per_query: int = 1,
) -> dict[str, list[str]]:
    """Per question, ``per_query`` ranked ids that are not its positives, after skipping the first
    ``skip`` such ids (likely unlabelled positives). Questions with too short a ranking get fewer
    (possibly none)."""
    if skip < 0 or per_query < 1:
        raise ValueError("skip must be >= 0 and per_query >= 1")
    out: dict[str, list[str]] = {}
    for qid, ranking in rankings.items():
        known = set(positives.get(qid, ()))
        candidates = [d for d in ranking if d not in known]
        out[qid] = candidates[skip : skip + per_query]
    return out
