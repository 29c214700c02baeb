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


def ranking_metrics(qrels: Qrels, run: Run) -> dict[str, float]:
    """Mean nDCG@10, Recall@10/@100, MRR@10 and MAP over the judged queries.

    A judged query missing from the run counts as 0 (as in BEIR), never as absent.
    """
    if not qrels:
        raise ValueError("no judged queries")
    run = {q: run.get(q) or {"__none__": 0.0} for q in qrels}
    main = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10,100", "map"})
    per_query = main.evaluate(_top(run, 100))
    mrr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(_top(run, 10))
    n = len(qrels)
    return {
        "ndcg@10": sum(v["ndcg_cut_10"] for v in per_query.values()) / n,
        "recall@10": sum(v["recall_10"] for v in per_query.values()) / n,
        "recall@100": sum(v["recall_100"] for v in per_query.values()) / n,
        "mrr@10": sum(v["recip_rank"] for v in mrr.values()) / n,
        "map": sum(v["map"] for v in per_query.values()) / n,
    }
