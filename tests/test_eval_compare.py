"""`grounded eval compare`: candidates parsed and checked, document aggregation by hand, the
selection rule, and the one-table report on two tiny sets."""

import json
from pathlib import Path

import pytest
from support.beir_sets import tiny_set_args
from support.cli_runner import grounded
from typer.testing import CliRunner

from eval.aggregation import aggregate
from eval.cli import app as eval_app
from eval.compare import (
    BASELINE,
    Candidate,
    CompareReport,
    DatasetResult,
    choose,
    compare,
    compare_markdown,
    parse_candidate,
    verdict,
)
from eval.datasets import load_beir
from eval.significance import Interval
from ingest.embedding import SentenceTransformerEmbedder
from ingest.index import EdgeIndex
from ingest.settings import Settings
from service.pipeline import RagPipeline

FIXTURES = Path(__file__).parent / "fixtures"


def test_aggregation_by_hand() -> None:
    hits = [("a", 0.5), ("b", 0.45), ("a", 0.3), ("a", 0.1), ("c", 0.2)]
    assert aggregate(hits, "max") == {"a": 0.5, "b": 0.45, "c": 0.2}
    plus = aggregate(hits, "max+0.5")  # best + half the second best, the rest ignored
    assert plus == pytest.approx({"a": 0.65, "b": 0.45, "c": 0.2})
    assert aggregate(hits, "sum") == pytest.approx({"a": 0.9, "b": 0.45, "c": 0.2})
    assert aggregate([], "max+0.1") == {}
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(hits, "max+2")


def test_parse_candidate() -> None:
    c = parse_candidate("fusion=rrf, rrf_k=20,aggregation=max+0.1")
    assert c.overrides == {"fusion": "rrf", "rrf_k": 20} and c.aggregation == "max+0.1"
    small = parse_candidate("chunk_size=64")
    assert small.settings(Settings()).chunk_overlap == 16  # kept below chunk_size / 2
    for bad, message in [
        ("fusion=maybe", "fusion=maybe"),
        ("top_k=3", "cannot be compared"),
        ("rrf_k", "not key=value"),
        ("aggregation=max", "changes nothing"),
        # under the default DBSF these would measure the baseline and look like a tie
        ("dense_weight=1.5", "dense_weight only change RRF fusion.*add fusion=rrf"),
        ("fusion=dbsf,rrf_k=20", "rrf_k only change RRF"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_candidate(bad)


def _report(scores: dict[str, dict[str, float]], noise: float = 0.03) -> CompareReport:
    """Hand-made nDCG@10 per dataset: {dataset: {label: value}}; each delta's interval is the
    delta ± ``noise``."""
    labels = [label for label in next(iter(scores.values())) if label != BASELINE]
    results = [
        DatasetResult(
            name,
            "dev",
            10,
            {label: {"ndcg@10": v} for label, v in by_label.items()},
            {
                label: Interval(v - by_label[BASELINE] - noise, v - by_label[BASELINE] + noise)
                for label, v in by_label.items()
                if label != BASELINE
            },
        )
        for name, by_label in scores.items()
    ]
    return CompareReport([Candidate(label) for label in labels], results, {})


def test_rule_best_mean_without_losing_more_than_tolerance() -> None:
    report = _report(
        {
            "s1": {BASELINE: 0.70, "big": 0.80, "steady": 0.72, "slight": 0.696},
            "s2": {BASELINE: 0.50, "big": 0.49, "steady": 0.51, "slight": 0.55},
        }
    )
    # "big" has the best mean but loses 0.01 on s2; "slight" loses 0.004, within tolerance
    assert choose(report) == "slight"
    assert report.to_dict()["mean_delta"] == {"big": 0.045, "steady": 0.015, "slight": 0.023}
    # the rule picks by the figures; the intervals say which deltas are beyond noise
    assert report.beyond_noise("big") == ["s1"] and report.beyond_noise("steady") == []
    assert report.to_dict()["beyond_noise"]["slight"] == ["s2"]
    assert choose(_report({"s": {BASELINE: 0.7, "worse": 0.69}})) is None


def test_rule_wants_a_gain_beyond_noise_on_some_set() -> None:
    scores = {
        "s1": {BASELINE: 0.70, "everywhere": 0.725, "proven": 0.74},
        "s2": {BASELINE: 0.50, "everywhere": 0.525, "proven": 0.496},
    }
    # ± 0.03: "everywhere" has the best mean (+0.025 against +0.018) but gains within noise on
    # every set; "proven" gains beyond it on s1 and loses within the tolerance on s2
    report = _report(scores, noise=0.03)
    assert report.gains_beyond_noise("everywhere") == [] and report.gains_beyond_noise(
        "proven"
    ) == ["s1"]
    assert choose(report) == "proven"
    assert choose(report, evidence=False) == "everywhere"
    # ± 0.05: nothing is proven, so the defaults stay, and the report names the unproven pick
    report = _report(scores, noise=0.05)
    assert choose(report) is None
    assert report.to_dict()["best_mean_without_evidence"] == "everywhere"
    assert verdict(report, "dev")[1:] == [
        "chosen: none, keep the defaults",
        "[low, high]: 95% bootstrap interval of the per-query difference",
        "everywhere has the best mean (+0.0250), but its gain is within the noise of every set",
    ]
    assert verdict(_report(scores, noise=0.03), "test")[1:] == [
        "the rule would pick (on test: report only): proven",
        "[low, high]: 95% bootstrap interval of the per-query difference",
        "proven gains beyond noise on: s1",
        "everywhere has the best mean (+0.0250), but its gain is within the noise of every set",
    ]
    # a pick's real loss within the tolerance is named apart from its gains
    mixed = _report({"s1": {BASELINE: 0.7, "x": 0.76}, "s2": {BASELINE: 0.5, "x": 0.496}}, 0.003)
    assert verdict(mixed, "dev")[-2:] == [
        "x gains beyond noise on: s1",
        "x loses beyond noise (within the tolerance) on: s2",
    ]
    # a lower bound that prints as +0.0000 is not a gain beyond noise
    edge = _report({"s": {BASELINE: 0.7, "hair": 0.70003}}, noise=0.00002)
    assert edge.results[0].intervals["hair"].low > 0 and edge.gains_beyond_noise("hair") == []
    # a real loss is beyond noise, but it is not a gain
    worse = _report({"s": {BASELINE: 0.7, "worse": 0.6}})
    assert worse.beyond_noise("worse") == ["s"] and worse.gains_beyond_noise("worse") == []


def test_table_has_one_row_per_dataset_and_the_mean() -> None:
    report = _report({"s1": {BASELINE: 0.7, "x": 0.75}, "s2": {BASELINE: 0.5, "x": 0.48}})
    lines = compare_markdown(report).splitlines()
    assert len(lines) == 2 + 2 + 1
    assert lines[2] == "| s1 (dev, 10) | 0.7000 | 0.7500 | +0.0500 [+0.0200, +0.0800] |"
    assert lines[3] == "| s2 (dev, 10) | 0.5000 | 0.4800 | -0.0200 [-0.0500, +0.0100] |"
    assert lines[4] == "| **mean** | 0.6000 | 0.6150 | +0.0150 |"


def test_compare_on_two_sets(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    from eval.beir_build import build_xquad

    xquad = build_xquad(FIXTURES / "squad_mini.json", tmp_path / "sets").path
    sets = [load_beir(FIXTURES / "mini_beir"), load_beir(xquad, "test")]
    settings = Settings(data_dir=tmp_path / "data")
    pipeline = RagPipeline.from_settings(
        settings, index=EdgeIndex(tmp_path / "data"), embedder=embedder
    )
    indexed: set[tuple[str, str]] = set()
    try:
        candidates = [
            parse_candidate("fusion=dbsf"),
            parse_candidate("aggregation=max+0.1"),
            parse_candidate("bm25_k1=1.2,bm25_b=0.75"),
        ]
        report = compare(
            pipeline, sets, candidates, index_progress=lambda d, label, _n: indexed.add((d, label))
        )
        bm25 = {
            pipeline.index.manifest(c).bm25.b  # type: ignore[union-attr]
            for c in pipeline.index.list_collections()
        }
    finally:
        pipeline.close()
    # fusion and aggregation candidates reuse the baseline's index; other BM25 weights need
    # their own, created with those weights
    assert indexed == {
        ("mini_beir", BASELINE),
        ("xquad-en", BASELINE),
        ("mini_beir", "bm25_k1=1.2,bm25_b=0.75"),
        ("xquad-en", "bm25_k1=1.2,bm25_b=0.75"),
    }
    assert bm25 == {0.75, 0.4}
    assert [(r.dataset, r.split) for r in report.results] == [
        ("mini_beir", "test"),
        ("xquad-en", "test"),
    ]
    for r in report.results:
        for c in candidates:
            expected = r.scores[c.label]["ndcg@10"] - r.scores[BASELINE]["ndcg@10"]
            assert r.delta(c.label) == pytest.approx(expected, abs=1e-4)
            ci = r.intervals[c.label]  # the per-query differences' interval holds their mean
            assert ci.low - 1e-4 <= r.delta(c.label) <= ci.high + 1e-4
    assert report.results[0].scores[BASELINE]["ndcg@10"] > 0.8


def test_compare_command(tmp_path: Path) -> None:
    proc = grounded(
        "eval",
        "compare",
        *tiny_set_args(tmp_path / "sets"),
        "--split",
        "dev",
        "--candidate",
        "fusion=rrf,rrf_k=20",
        "--json",
        data_dir=tmp_path / "data",
    )
    data = json.loads(proc.stdout)
    assert [d["dataset"] for d in data["datasets"]] == ["xquad-en", "halueval-qa"]
    assert set(data["mean"]) == {BASELINE, "fusion=rrf,rrf_k=20"} and "rule" in data
    for d in data["datasets"]:
        low, high = d["delta_ci95"]["fusion=rrf,rrf_k=20"]
        assert low <= d["delta"]["fusion=rrf,rrf_k=20"] <= high
    assert set(data["beyond_noise"]) == {"fusion=rrf,rrf_k=20"}
    bad = CliRunner().invoke(
        eval_app, ["compare", "--dataset", str(tmp_path), "--candidate", "colour=blue"]
    )
    assert bad.exit_code == 2 and "cannot be compared" in bad.output
