"""Answer eval: SQuAD metrics, id-based context metrics, NaN handling, the command end to end."""

import json
import math
from pathlib import Path

import pytest
from support.cli_runner import grounded
from support.paths import SHARED

from eval.answers import (
    AnswerRecord,
    evaluate_answers,
    exact_match,
    load_answer_suite,
    strip_citations,
    summarize,
    token_f1,
)
from eval.hallucination import HallucinationDetector
from eval.retrieval import index_corpus
from ingest.embedding import SentenceTransformerEmbedder
from ingest.index import EdgeIndex
from ingest.settings import Settings
from service.pipeline import RagPipeline

FIXTURE = Path(__file__).parent / "fixtures" / "squad_mini.json"


def test_squad_metrics() -> None:
    assert exact_match("The Aqua Appia.", ["Aqua Appia"]) == 1.0
    assert exact_match("Aqua Virgo", ["Aqua Appia"]) == 0.0
    # 2 of 6 predicted tokens match, both gold tokens found: P=1/3, R=1, F1=0.5
    assert token_f1("built in 312 BC by Appius", ["312 BC"]) == pytest.approx(0.5)
    assert token_f1("anything", []) == 0.0
    assert strip_citations("It is red [1]. And blue [2]") == "It is red. And blue"


def test_nan_judge_scores_are_undetermined_not_zero() -> None:
    def rec(judge: dict[str, float]) -> AnswerRecord:
        return AnswerRecord("q", "q?", "a", False, [], [], judge=judge)

    summary = summarize(
        [rec({"faithfulness": 1.0}), rec({"faithfulness": math.nan}), rec({"faithfulness": 0.5})]
    )
    assert summary["judge.faithfulness"] == 0.75
    assert summary["judge.faithfulness.undetermined"] == 1
    all_nan = summarize([rec({"faithfulness": math.nan})])
    assert all_nan["judge.faithfulness"] is None and all_nan["judge.faithfulness.undetermined"] == 1


XQUAD = SHARED / "xquad_en" / "xquad.en.json"


def _check_suite(path: Path) -> tuple[int, int]:
    """Every item has answers and relevant passages from the corpus; (passages, items)."""
    suite = load_answer_suite(path)
    ids = {d.id for d in suite.corpus}
    assert all(item.answers and set(item.relevant_ids) <= ids for item in suite.items)
    return len(suite.corpus), len(suite.items)


def test_squad_fixture_suite_loads() -> None:
    assert _check_suite(FIXTURE) == (3, 5)


@pytest.mark.skipif(not XQUAD.exists(), reason=f"XQuAD (English) is not at {XQUAD}")
def test_xquad_suite_loads() -> None:
    assert _check_suite(XQUAD) == (240, 1190)


def test_answers_through_the_pipeline(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    settings = Settings(data_dir=tmp_path)
    pipeline = RagPipeline.from_settings(settings, index=EdgeIndex(tmp_path), embedder=embedder)
    try:
        suite = load_answer_suite(FIXTURE)
        collection, _ = index_corpus(pipeline, suite.name, FIXTURE, suite.corpus)
        summary, records = evaluate_answers(
            pipeline, suite, collection, top_k=2, detector=HallucinationDetector(embedder)
        )
    finally:
        pipeline.close()
    assert summary["questions"] == 5 and summary["generator"] == "extractive"
    assert summary["context_recall"] == 1.0  # each gold passage is retrieved
    # a whole quoted sentence rarely equals the gold span, but it contains its tokens
    assert summary["f1"] > 0 and summary["exact_match"] <= summary["f1"], summary
    # extractive answers quote the context, so the detector finds them supported
    assert summary["unsupported_rate"] <= 0.2
    assert all(r.retrieved_ids and r.contexts for r in records)


def test_answers_command(tmp_path: Path) -> None:
    proc = grounded("eval", "answers", "--dataset", str(FIXTURE), "--json", data_dir=tmp_path)
    data = json.loads(proc.stdout)
    assert data["questions"] == 5 and data["judge"] is None and "f1" in data
