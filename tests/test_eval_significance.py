"""Bootstrap intervals of eval figures (eval.significance) and the per-query metrics they
resample: checked against the normal approximation and against pytrec_eval's means."""

import numpy as np
import pytest

from eval.metrics import per_query_metrics, ranking_metrics
from eval.retrieval import score_run
from eval.significance import Interval, mean_interval, paired_interval


def test_mean_interval_matches_the_normal_approximation() -> None:
    values = np.random.default_rng(0).uniform(0, 1, 400)
    ci = mean_interval(values)
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values))  # the textbook interval
    assert ci.low < values.mean() < ci.high
    assert ci.low == pytest.approx(values.mean() - half, abs=0.15 * half)
    assert ci.high == pytest.approx(values.mean() + half, abs=0.15 * half)
    assert mean_interval(values) == ci  # seeded: a report is reproducible
    # four times the queries, about half the width
    wide, narrow = mean_interval(values[:100]), ci
    assert 1.6 < (wide.high - wide.low) / (narrow.high - narrow.low) < 2.5


def test_constant_values_give_a_point_and_no_values_an_error() -> None:
    assert mean_interval([0.25] * 30) == Interval(0.25, 0.25)
    with pytest.raises(ValueError, match="no values"):
        mean_interval([])


def test_pairing_finds_a_small_consistent_gain_that_unpaired_figures_hide() -> None:
    rng = np.random.default_rng(1)
    base = {f"q{i}": float(v) for i, v in enumerate(rng.uniform(0, 1, 300))}
    better = {q: v + 0.01 + float(rng.normal(0, 0.005)) for q, v in base.items()}
    gain = paired_interval(base, better)
    assert gain.excludes_zero and gain.low > 0
    # the two means' own intervals overlap almost entirely
    a, b = mean_interval(list(base.values())), mean_interval(list(better.values()))
    assert b.low < a.high
    # wins and losses of the same size on different queries: no real difference
    signs = rng.permutation([1, -1] * 150)
    mixed = {q: v + 0.2 * s for (q, v), s in zip(base.items(), signs, strict=True)}
    tie = paired_interval(base, mixed)
    assert not tie.excludes_zero and tie.low < 0 < tie.high
    with pytest.raises(ValueError, match="different queries"):
        paired_interval(base, {"q0": 1.0})


def test_per_query_metrics_average_to_ranking_metrics() -> None:
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1, "d3": 1}, "q3": {"d4": 1}}
    run = {"q1": {"d1": 0.9, "d9": 0.5}, "q2": {"d9": 0.8, "d3": 0.7}}  # q3 not answered
    per_query = per_query_metrics(qrels, run)
    assert set(per_query) == set(qrels)
    assert per_query["q1"]["ndcg@10"] == 1.0 and per_query["q1"]["mrr@10"] == 1.0
    assert per_query["q2"]["mrr@10"] == 0.5 and per_query["q2"]["recall@10"] == 0.5
    assert per_query["q3"] == dict.fromkeys(per_query["q3"], 0.0)  # missing counts as 0
    means = ranking_metrics(qrels, run)
    for metric, value in means.items():
        assert value == pytest.approx(sum(q[metric] for q in per_query.values()) / 3)
    scores, _ = score_run(qrels, run, [1.0, 2.0, 3.0])
    assert scores["ndcg@10_low"] <= scores["ndcg@10"] <= scores["ndcg@10_high"]
    assert scores["ndcg@10_low"] < scores["ndcg@10_high"]
