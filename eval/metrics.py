"""Ranking metrics from pytrec_eval (trec_eval's own code), BEIR-style dicts in and out.

Example::

    scores = ranking_metrics({"q1": {"d1": 1}}, {"q1": {"d1": 0.9, "d2": 0.5}})
    scores["ndcg@10"]  # 1.0
"""

from __future__ import annotations

import pytrec_eval

Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]

METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "map")


def _top(run: Run, k: int) -> Run:
    return {q: dict(sorted(docs.items(), key=lambda kv: -kv[1])[:k]) for q, docs in run.items()}


def per_query_metrics(qrels: Qrels, run: Run) -> dict[str, dict[str, float]]:
    """Each judged query's nDCG@10, Recall@10/@100, MRR@10 and MAP (keys as :data:`METRICS`):
    what :func:`ranking_metrics` averages, and what a paired comparison of two runs resamples
    (:mod:`eval.significance`).

    A judged query missing from the run counts as 0 (as in BEIR), never as absent.
    """
    if not qrels:
        raise ValueError("no judged queries")
    run = {q: run.get(q) or {"__none__": 0.0} for q in qrels}
    main = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10,100", "map"})
    per_query = main.evaluate(_top(run, 100))
    mrr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(_top(run, 10))
    # pytrec_eval leaves out a query whose qrels judge no document relevant; it scores 0.
    empty = {"ndcg_cut_10": 0.0, "recall_10": 0.0, "recall_100": 0.0, "map": 0.0}
    scores = {}
    for q in qrels:
        found = per_query.get(q, empty)
        scores[q] = {
            "ndcg@10": found["ndcg_cut_10"],
            "recall@10": found["recall_10"],
            "recall@100": found["recall_100"],
            "mrr@10": mrr.get(q, {"recip_rank": 0.0})["recip_rank"],
            "map": found["map"],
        }
    return scores


def mean_metrics(per_query: dict[str, dict[str, float]]) -> dict[str, float]:
    """The mean of each metric over the queries of :func:`per_query_metrics`."""
    return {m: sum(q[m] for q in per_query.values()) / len(per_query) for m in METRICS}


def ranking_metrics(qrels: Qrels, run: Run) -> dict[str, float]:
    """Mean nDCG@10, Recall@10/@100, MRR@10 and MAP over the judged queries
    (:func:`per_query_metrics`)."""
    return mean_metrics(per_query_metrics(qrels, run))
