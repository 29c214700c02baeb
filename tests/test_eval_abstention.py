"""The abstention curve: rates by hand, the floor rule, and similarities measured as the
pipeline's floor would see them."""

from pathlib import Path

from support.beir_sets import tiny_set_args
from support.cli_runner import grounded

from eval.abstention import (
    NO_SIMILARITY,
    choose_floor,
    curve_markdown,
    default_floors,
    measure,
    rates,
)
from eval.beir_build import build_xquad
from eval.datasets import load_beir
from ingest.embedding import SentenceTransformerEmbedder
from ingest.index import EdgeIndex
from ingest.settings import Settings
from service.pipeline import QueryOptions, RagPipeline
from service.retrieval import SearchParams

FIXTURES = Path(__file__).parent / "fixtures"


def test_rates_by_hand() -> None:
    answerable = {"a": [0.9, 0.6, 0.3, NO_SIMILARITY], "b": [0.5, 0.5]}
    unanswerable = {"a -> b": [0.1, 0.45], "b -> a": [0.2, 0.3, 0.5, 0.7]}
    low, mid, high = rates(answerable, unanswerable, [0.0, 0.4, 0.55])
    # floor 0: only the question with no chunk abstains; every unanswerable one is answered
    assert (low.per_set, low.false_abstention) == ({"a": 0.25, "b": 0.0}, 0.125)
    assert low.false_answer == 1.0
    # floor 0.4: a abstains on 0.3 and none; answered when similarity >= floor (0.45; 0.5, 0.7)
    assert mid.per_set == {"a": 0.5, "b": 0.0} and mid.false_abstention == 0.25
    assert mid.per_pair == {"a -> b": 0.5, "b -> a": 0.5} and mid.false_answer == 0.5
    assert high.per_set == {"a": 0.5, "b": 1.0} and high.false_answer == 0.125
    assert (mid.total, high.total) == (0.75, 0.875)
    assert choose_floor([low, mid, high]).floor == 0.4
    assert mid.false_answer_on_topic is None and mid.to_dict()["false_answer_on_topic"] is None


def test_on_topic_false_answers_are_reported_but_do_not_move_the_floor() -> None:
    answerable = {"a": [0.9, 0.6], "b": [0.5, 0.5]}
    unanswerable = {"a -> b": [0.1, 0.45], "b -> a": [0.2, 0.3]}
    on_topic = {"a": [0.55, 0.3], "b": [0.45, 0.41, 0.2, NO_SIMILARITY]}
    plain = rates(answerable, unanswerable, [0.0, 0.4, 0.55])
    curve = rates(answerable, unanswerable, [0.0, 0.4, 0.55], on_topic)
    assert [r.total for r in curve] == [r.total for r in plain]
    assert choose_floor(curve).floor == choose_floor(plain).floor
    assert curve[1].on_topic == {"a": 0.5, "b": 0.5} and curve[1].false_answer_on_topic == 0.5
    assert curve[2].on_topic == {"a": 0.5, "b": 0.0} and curve[2].false_answer_on_topic == 0.25
    assert curve_markdown(curve, 0.4).splitlines()[3].endswith("| 0.5000 |")


def test_rule_prefers_the_lower_floor_on_a_tie() -> None:
    curve = rates({"a": [0.5]}, {"a -> b": [0.2]}, [0.1, 0.3, 0.5, 0.6])
    assert [r.total for r in curve] == [1.0, 0.0, 0.0, 1.0]
    assert choose_floor(curve).floor == 0.3


def test_default_floors() -> None:
    floors = default_floors()
    assert floors[0] == 0.0 and floors[-1] == 0.8 and len(floors) == 33


def test_measure_matches_the_pipeline(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    xquad = build_xquad(FIXTURES / "squad_mini.json", tmp_path / "sets").path
    sets = [load_beir(FIXTURES / "mini_beir"), load_beir(xquad, "test")]
    pipeline = RagPipeline.from_settings(
        Settings(data_dir=tmp_path / "data"), index=EdgeIndex(tmp_path / "data"), embedder=embedder
    )
    try:
        measured = measure(pipeline, sets)
        answerable, unanswerable = measured.answerable, measured.unanswerable
        assert set(answerable) == {"mini_beir", "xquad-en"}
        assert set(unanswerable) == {"mini_beir -> xquad-en", "xquad-en -> mini_beir"}
        assert [len(v) for v in answerable.values()] == [len(s.queries) for s in sets]
        # own corpus beats the other corpus on average: the curve has something to separate
        own = sum(answerable["mini_beir"]) / len(answerable["mini_beir"])
        other = sum(unanswerable["mini_beir -> xquad-en"]) / len(sets[0].queries)
        assert own > other
        # without their judged documents the questions find less in their own corpus
        assert set(measured.on_topic) == set(answerable)
        for name, removed in measured.on_topic.items():
            assert len(removed) == len(answerable[name])
            assert sum(removed) < sum(answerable[name])
        # the floor the pipeline applies sees the same best similarity
        question = next(iter(sets[0].queries.values()))
        best = answerable["mini_beir"][0]
        pipeline.settings.abstain_min_similarity = best + 0.001
        collection = next(c for c in pipeline.index.list_collections() if "mini_beir" in c)
        prep = pipeline._prepare_answer(SearchParams(question, collection), QueryOptions())
        assert prep.answer is not None and prep.answer.abstained
        pipeline.settings.abstain_min_similarity = best - 0.001
        prep = pipeline._prepare_answer(SearchParams(question, collection), QueryOptions())
        assert prep.answer is None
    finally:
        pipeline.close()


def test_abstention_command_reports_the_on_topic_rate(tmp_path: Path) -> None:
    proc = grounded(
        "eval",
        "abstention",
        *tiny_set_args(tmp_path / "sets"),
        "--floor",
        "0.4",
        data_dir=tmp_path / "data",
    )
    header = next(line for line in proc.stdout.splitlines() if line.startswith("| floor"))
    assert header.endswith("| false answer, on topic (not in the rule) |")
    words = " ".join(proc.stdout.split())  # piped output wraps at a fixed width
    assert "on topic, with the answer removed, 0." in words
    assert '"per_set_false_answer_on_topic": {"xquad-en":' in words
