"""Hallucination detector, ladder report and nightly gates."""

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support.cli_runner import grounded
from support.paths import SHARED

from eval.datasets import load_beir
from eval.detector import best_threshold, is_held_out, load_halueval_qa, validate_detector
from eval.hallucination import HallucinationDetector
from eval.ladder import run_ladder, write_ladder_report
from eval.retrieval import run_queries
from ingest.embedding import SentenceTransformerEmbedder
from ingest.index import EdgeIndex
from ingest.settings import Settings
from service.pipeline import RagPipeline

FIXTURES = Path(__file__).parent / "fixtures"
CONTEXT = (
    "The Oberoi Group is a hotel company with its head office in Delhi. It was founded in 1934."
)


@pytest.fixture(scope="module")
def detector(embedder: SentenceTransformerEmbedder) -> HallucinationDetector:
    return HallucinationDetector(embedder)


def test_supported_and_unsupported_claims(detector: HallucinationDetector) -> None:
    q = "Where is the Oberoi Group's head office?"
    good = detector.check(q, "Its head office is in Delhi.", CONTEXT)
    wrong_city = detector.check(q, "Its head office is in Mumbai.", CONTEXT)
    wrong_year = detector.check("When was it founded?", "It was founded in 1952.", CONTEXT)
    assert good.score < wrong_city.score and good.score < wrong_year.score
    assert wrong_city.claims[0].signals["entities"] == 0.0
    assert wrong_year.claims[0].signals["numbers"] == 0.0
    mixed = detector.check(q, "The head office is in Delhi. It was founded in 1952.", CONTEXT)
    assert len(mixed.claims) == 2 and mixed.unsupported_rate == 0.5
    assert detector.check(q, "", CONTEXT).claims == []


def test_threshold_is_chosen_on_calibration_only() -> None:
    import numpy as np

    assert best_threshold(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == pytest.approx(
        0.2
    )
    questions = [f"question {i}" for i in range(200)]
    held = sum(is_held_out(q) for q in questions)
    assert 70 < held < 130  # a real split, stable across runs


HALUEVAL_QA = SHARED / "halueval" / "qa_data.json"


def _check_validation(detector: HallucinationDetector, path: Path, limit: int | None) -> None:
    report = validate_detector(detector, path, limit=limit)
    rows = load_halueval_qa(path, limit)
    held = report["held_out"]
    assert report["rows"] == len(rows)
    assert held["answers"] == 2 * sum(is_held_out(r["question"]) for r in rows)  # right + wrong
    assert held["balanced_accuracy"] > 0.6, report  # better than chance, on unseen rows
    assert held["auroc"] > 0.7, report


def test_detector_validation_on_the_fixture(detector: HallucinationDetector) -> None:
    _check_validation(detector, FIXTURES / "halueval_mini.jsonl", limit=None)


@pytest.mark.slow
@pytest.mark.skipif(not HALUEVAL_QA.exists(), reason=f"HaluEval QA is not at {HALUEVAL_QA}")
def test_detector_validation_on_halueval(detector: HallucinationDetector) -> None:
    _check_validation(detector, HALUEVAL_QA, limit=300)


def test_ladder_writes_table_chart_and_html(
    tmp_path: Path, embedder: SentenceTransformerEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import eval.ladder

    modes: list[str] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        modes.append(args[3])
        return run_queries(*args, **kwargs)

    monkeypatch.setattr(eval.ladder, "run_queries", spy)
    settings = Settings(data_dir=tmp_path / "data")
    pipeline = RagPipeline.from_settings(
        settings, index=EdgeIndex(settings.data_dir), embedder=embedder
    )
    try:
        rows = run_ladder(pipeline, load_beir(FIXTURES / "mini_beir"), chunk_sizes=[64])
    finally:
        pipeline.close()
    names = [r.name for r in rows]
    assert names[:5] == ["bm25", "dense", "hybrid-rrf", "hybrid-dbsf", "chunks-64"]
    # the rungs above hybrid climb from the fusion a request gets (DBSF by default), not RRF
    assert modes == ["sparse", "dense", "hybrid-rrf", "hybrid-dbsf", "hybrid-dbsf"]
    assert rows[4].description.startswith("hybrid DBSF with 64-token chunks")
    assert next(r for r in rows if r.name == "dense").delta == 0.0
    assert all(r.skipped for r in rows if r.name.startswith("+"))
    paths = write_ladder_report(rows, tmp_path / "out", "mini")
    assert paths["png"].read_bytes().startswith(b"\x89PNG")
    page = paths["html"].read_text()
    assert "data:image/png;base64," in page and "hybrid-rrf" in page
    assert json.loads(paths["json"].read_text())["rows"][0]["name"] == "bm25"
    assert "| bm25 |" in paths["markdown"].read_text()


def _nightly(config: Path, data: Path) -> subprocess.CompletedProcess[str]:
    return grounded("eval", "nightly", "--config", str(config), data_dir=data, check_rc=None)


@pytest.mark.slow  # two `grounded eval nightly` processes
def test_nightly_passes_then_fails_when_a_floor_is_raised(tmp_path: Path) -> None:
    (tmp_path / "mini").symlink_to(FIXTURES / "mini_beir")
    (tmp_path / "halu.jsonl").symlink_to(FIXTURES / "halueval_mini.jsonl")

    def write(floor: float) -> Path:
        config = tmp_path / "eval.yaml"
        config.write_text(
            "results_dir: results\nsuites:\n"
            "  - {name: mini, kind: retrieval, dataset: mini, modes: [sparse, hybrid-rrf],"
            f" floors: {{hybrid-rrf.ndcg@10: {floor}}}, tolerance: 0.01}}\n"
            "  - {name: halu, kind: detector, dataset: halu.jsonl}\n"
        )
        return config

    first = _nightly(write(0.5), tmp_path / "data")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "PASSED" in first.stdout
    failed = _nightly(write(1.01), tmp_path / "data")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "< floor 1.0100" in failed.stdout
    runs = sorted((tmp_path / "results" / "runs").glob("*.json"))
    assert len(runs) == 2 and json.loads(runs[-1].read_text())["passed"] is False
    baseline = json.loads((tmp_path / "results" / "baseline.json").read_text())
    assert (
        baseline["run"] == json.loads(runs[0].read_text())["run"]
    )  # failures never become baseline
    page = (tmp_path / "results" / "report.html").read_text()
    assert "FAILED" in page and page.count("data:image/png;base64,") >= 2


def test_nightly_rejects_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "eval.yaml"
    config.write_text("suites: [{name: x, kind: magic, dataset: y}]\n")
    proc = _nightly(config, tmp_path / "data")
    assert proc.returncode == 2 and "invalid nightly config" in proc.stderr
