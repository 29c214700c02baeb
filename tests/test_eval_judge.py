"""ragas metrics through :class:`RagasJudge`, against OpenAI-compatible servers.

- A scripted judge (:mod:`support.fake_judge` behind :class:`FakeLLM`) answers every ragas prompt
  in its output format, on a case with an obvious verdict: every verdict must be a number, and
  each metric must rank the rows the right way round.
- A judge whose replies never parse: every verdict is NaN and counted as undetermined.
- (slow) A real llama.cpp server with SmolLM2-135M, as a smoke test of the same plumbing against
  a real server. The tiny model fails ragas' output format (or times out) on every metric, so
  that test cannot require a number; the scripted judge is where numbers are required.
"""

from __future__ import annotations

import math

import pytest
from support.fake_judge import judge_reply
from support.fake_llm import FakeLLM

from eval.answers import AnswerItem, AnswerRecord, summarize
from eval.judge import JudgeConfig, RagasJudge
from ingest.embedding import SentenceTransformerEmbedder

METRICS = {
    "faithfulness",
    "answer_relevancy",
    "llm_context_precision_with_reference",
    "context_recall",
}
QUESTION = "What is the boundary of a black hole called?"
REFERENCE = "The event horizon."
CONTEXT = "The boundary of a black hole is called the event horizon. Nothing escapes it."
BANANAS = "Bananas are rich in potassium."


@pytest.fixture(autouse=True)
def _no_ragas_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGAS_DO_NOT_TRACK", "true")


def _case() -> tuple[list[AnswerRecord], list[AnswerItem]]:
    """One question, answered three ways, and an abstention (which is not judged)."""
    answers = {
        # every word in the context; the context holds the reference
        "faithful": ("The boundary of a black hole is called the event horizon.", CONTEXT),
        # "photon sphere" is nowhere in the context
        "unfaithful": ("The boundary of a black hole is called the photon sphere.", CONTEXT),
        # true to its own context, but neither answer nor context is about the question
        "off-topic": (BANANAS, BANANAS),
    }
    records = [
        AnswerRecord(name, QUESTION, answer, False, [name], [context])
        for name, (answer, context) in answers.items()
    ]
    records.append(AnswerRecord("abstained", QUESTION, "", True, [], []))
    items = [AnswerItem(r.id, QUESTION, (REFERENCE,)) for r in records]
    return records, items


def test_a_scripted_judge_gives_finite_verdicts_the_right_way_round(
    embedder: SentenceTransformerEmbedder,
) -> None:
    records, items = _case()
    with FakeLLM(judge_reply) as llm:
        RagasJudge(JudgeConfig(llm.url, "fake-model", timeout=30), embedder)(records, items)
    # the scripted judge understood every prompt ragas sent (a ragas upgrade may change them)
    assert llm.requests and all(judge_reply(body).startswith("{") for body in llm.requests)

    judged = {r.id: r.judge for r in records}
    assert judged.pop("abstained") == {}
    for name, verdicts in judged.items():
        assert set(verdicts) == METRICS, name
        assert all(math.isfinite(v) for v in verdicts.values()), (name, verdicts)
    faithful, unfaithful, off_topic = judged["faithful"], judged["unfaithful"], judged["off-topic"]

    # faithfulness: the share of the answer's statements its context supports
    assert faithful["faithfulness"] == 1.0 and unfaithful["faithfulness"] == 0.0
    assert off_topic["faithfulness"] == 1.0  # faithful to its context, if beside the point
    # answer relevancy: how close the question the answer answers is to the one asked
    for on_topic in (faithful, unfaithful):
        assert on_topic["answer_relevancy"] > off_topic["answer_relevancy"] + 0.5, judged
    # context precision and recall: the context supports the reference, or not at all
    for name in ("llm_context_precision_with_reference", "context_recall"):
        assert faithful[name] == unfaithful[name] == pytest.approx(1.0), name
        assert off_topic[name] == 0.0, name

    summary = summarize(records)
    for name in METRICS:
        assert summary[f"judge.{name}.undetermined"] == 0, name
    assert summary["judge.faithfulness"] == round(2 / 3, 4)


def test_judgements_that_never_parse_are_nan_and_counted_undetermined(
    embedder: SentenceTransformerEmbedder,
) -> None:
    records, items = _case()
    with FakeLLM("I would rather not say.") as llm:
        RagasJudge(JudgeConfig(llm.url, "fake-model", timeout=30), embedder)(records, items)
    assert llm.requests  # the judge was asked, and could not answer
    judged = [r for r in records if not r.abstained]
    for record in judged:
        assert set(record.judge) == METRICS, record.id
        assert all(math.isnan(v) for v in record.judge.values()), record.judge
    summary = summarize(records)
    for name in METRICS:
        assert summary[f"judge.{name}"] is None, name
        assert summary[f"judge.{name}.undetermined"] == len(judged), name


@pytest.mark.slow  # a real llama.cpp judge: minutes
def test_a_real_judge_server_answers_every_metric_of_every_judged_row(
    llm_server: str, embedder: SentenceTransformerEmbedder
) -> None:
    items = [AnswerItem("q1", QUESTION, (REFERENCE,))]
    records = [
        AnswerRecord("q1", QUESTION, "It is called the event horizon.", False, ["h"], [CONTEXT]),
        AnswerRecord("q3", "Unanswered?", "", True, [], []),  # abstained: not judged
    ]
    judge = RagasJudge(JudgeConfig(llm_server, "smollm2", timeout=120, max_tokens=256), embedder)
    judge(records, items)
    judged = records[0].judge
    assert set(judged) == METRICS
    assert records[1].judge == {}
    summary = summarize(records)
    for name in METRICS:
        undetermined = summary[f"judge.{name}.undetermined"]
        determined = int(not math.isnan(judged[name]))
        assert undetermined + determined == 1
        assert (summary[f"judge.{name}"] is None) == (determined == 0)
