"""ragas against a real local OpenAI-compatible server (llama.cpp + SmolLM2-135M).

The tiny judge's verdicts are not the point: the plumbing is. Every judged row must come back
with every metric, either as a number in [0, 1] or as NaN, and NaNs must be counted as
undetermined. SmolLM2-135M fails ragas' output format (or times out) on every metric, so this
test cannot require a number; a scripted judge that must answer is still to be written.
"""

import math

import pytest

from eval.answers import AnswerItem, AnswerRecord, summarize
from eval.judge import JudgeConfig, RagasJudge

pytestmark = pytest.mark.slow  # a real llama.cpp judge: minutes


def test_ragas_judge_plumbing_and_nan_accounting(llm_server: str, embedder) -> None:  # type: ignore[no-untyped-def]
    items = [
        AnswerItem("q1", "What is the boundary of a black hole called?", ("the event horizon",)),
    ]
    records = [
        AnswerRecord(
            "q1",
            items[0].question,
            "It is called the event horizon.",
            False,
            ["h"],
            ["Its boundary is called the event horizon."],
        ),
        AnswerRecord("q3", "Unanswered?", "", True, [], []),  # abstained: not judged
    ]
    judge = RagasJudge(JudgeConfig(llm_server, "smollm2", timeout=120, max_tokens=256), embedder)
    judge(records, items)
    expected = {
        "faithfulness",
        "answer_relevancy",
        "llm_context_precision_with_reference",
        "context_recall",
    }
    judged = records[0].judge
    assert set(judged) == expected
    assert all(math.isnan(v) or 0.0 <= v <= 1.0 for v in judged.values()), judged
    assert records[1].judge == {}
    summary = summarize(records)
    for name in expected:
        undetermined = summary[f"judge.{name}.undetermined"]
        determined = int(not math.isnan(judged[name]))
        assert undetermined + determined == 1
        assert (summary[f"judge.{name}"] is None) == (determined == 0)
