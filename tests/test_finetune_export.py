"""grounded export finetune: the service's own prompt, citations renumbered to its blocks, the
acceptance rule, and a validator that rejects what OpenAI would reject."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import service.prompts
from eval.finetune_export import (
    accepted,
    chat_example,
    check_messages,
    cite_supporting,
    example_tokens,
    validate_chat_jsonl,
)
from eval.tune_cli import export
from ingest.embedding import SentenceTransformerEmbedder
from service.prompts import build_prompt
from service.retrieval import RetrievedChunk
from service.tokens import HuggingFaceTokenCounter, TokenCounter

GOOD = [
    {"role": "system", "content": "rules"},
    {"role": "user", "content": "question?"},
    {"role": "assistant", "content": "answer [1]."},
]


def chunk(n: int, text: str, title: str = "") -> RetrievedChunk:
    return RetrievedChunk(n, 1.0 / n, f"c{n}", f"d{n}", 0, title, text, "", 0, len(text))


@pytest.fixture
def counter(embedder: SentenceTransformerEmbedder) -> TokenCounter:
    return HuggingFaceTokenCounter(embedder.tokenizer)


def words(text: str) -> int:
    return len(text.split())


# Validation -------------------------------------------------------------------------------------
def test_a_good_example_passes() -> None:
    assert check_messages(GOOD) == []
    assert check_messages(GOOD[1:]) == []  # the system message is optional
    multi = [*GOOD, {"role": "user", "content": "more?"}, {"role": "assistant", "content": "ok"}]
    assert check_messages(multi) == []


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        ([GOOD[0], GOOD[2], GOOD[1]], "alternate"),
        ([GOOD[0], GOOD[1]], "last message"),
        ([GOOD[0], {"role": "user", "content": "  "}, GOOD[2]], "empty"),
        ([GOOD[0], GOOD[1], {"role": "assistant", "content": None}], "empty"),
        ([GOOD[0], {"role": "human", "content": "q"}, GOOD[2]], "role 'human'"),
        ([GOOD[1], GOOD[0], GOOD[2]], "system message may only come first"),
        ([{**GOOD[1], "extra": 1}, GOOD[2]], "unknown keys"),
        ([], "non-empty list"),
        ("not a list", "non-empty list"),
    ],
)
def test_bad_examples_are_rejected(messages: Any, problem: str) -> None:
    assert any(problem in p for p in check_messages(messages))


def test_validate_file_reports_lines_and_tokens(tmp_path: Path) -> None:
    path = tmp_path / "ft.jsonl"
    path.write_text(
        json.dumps({"messages": GOOD})
        + "\n"
        + json.dumps({"messages": [GOOD[2], GOOD[1]]})
        + "\n{not json\n"
        + json.dumps({"prompt": "legacy"})
        + "\n"
    )
    report = validate_chat_jsonl(path, ("words", words), context_limit=10)
    assert not report.ok and report.examples == 4
    assert [e.split(":")[0] for e in report.errors][:1] == ["line 2"]
    assert any(e.startswith("line 3: not JSON") for e in report.errors)
    assert any(e.startswith("line 4") and "messages" in e for e in report.errors)
    # only the valid line is counted: 3 + 3 per message + content words
    assert report.tokens == [3 + (3 + 1) + (3 + 1) + (3 + 2)] == [example_tokens(GOOD, words)]
    assert report.over_limit == 1
    path.write_text(json.dumps({"messages": GOOD}) + "\n")
    assert validate_chat_jsonl(path, ("words", words)).ok


# The example ------------------------------------------------------------------------------------
def test_system_prompt_is_the_services(
    counter: TokenCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service.prompts, "new_fence", lambda: "untrusted-00000000")
    context = [chunk(1, "Cats purr at 25 Hz.", "Cats"), chunk(2, "Dogs bark.", "Dogs")]
    messages, reason = chat_example(
        "How do cats purr?",
        context,
        "At 25 Hz [1].",
        counter,
        context_window=2048,
        reply_tokens=256,
    )
    assert reason == "" and messages is not None
    service_prompt = build_prompt(
        "How do cats purr?", context, counter, context_window=2048, reply_tokens=256
    )
    assert messages[:-1] == service_prompt.messages
    assert messages[0]["role"] == "system" and "[1] Cats" in messages[0]["content"]
    assert messages[-1] == {"role": "assistant", "content": "At 25 Hz [1]."}
    assert check_messages(messages) == []


def test_citations_follow_the_blocks_that_fit(counter: TokenCounter) -> None:
    huge = "word " * 3000
    context = [chunk(1, "Alpha is first."), chunk(2, huge), chunk(3, "Gamma is third.")]
    kwargs: dict[str, Any] = {"context_window": 1024, "reply_tokens": 128}
    messages, _ = chat_example("q?", context, "Gamma [3]; alpha [1].", counter, **kwargs)
    assert messages is not None
    assert messages[-1]["content"] == "Gamma [2]; alpha [1]."  # block 2 was left out
    assert "Gamma is third." in messages[0]["content"].split("[2]", 1)[1]
    assert chat_example("q?", context, "Huge [2].", counter, **kwargs) == (
        None,
        "a cited block did not fit the prompt",
    )
    assert chat_example("q?", context, "No citation.", counter, **kwargs)[1] == "no citation"


def test_acceptance_rule() -> None:
    assert accepted("It was built in 1889 by Eiffel.", ["1889"], min_f1=0.5) == (True, "")
    assert accepted("1889", ["in 1889"], min_f1=0.5)[0]  # F1 2/3
    assert not accepted("It was built long ago.", ["1889"], min_f1=0.5)[0]
    assert not accepted("x", [], min_f1=0.5, unsupported_rate=lambda: 0.5)[0]
    assert accepted("x", [], min_f1=0.5, unsupported_rate=lambda: 0.0)[0]


def test_uncited_pair_answers_cite_the_block_that_supports_them() -> None:
    context = [chunk(1, "Dogs bark loudly."), chunk(2, "The tower is 330 metres tall.")]
    assert cite_supporting("330 metres tall", context) == "330 metres tall [2]"
    assert cite_supporting("Bananas are yellow", context) is None


# The command ------------------------------------------------------------------------------------
def test_export_command_from_pairs(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    rows = [
        {
            "question": "How tall is the tower?",
            "answer": "330 metres",
            "contexts": ["Dogs bark.", "The tower is 330 metres tall."],
        },
        {"question": "Colour of bananas?", "answer": "purple", "contexts": ["Dogs bark."]},
        {"question": "Who?", "answer": "Ann [1]", "contexts": ["Ann wrote it."]},
    ]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "ft.jsonl"
    result = CliRunner().invoke(
        export,
        [
            "finetune",
            "--format",
            "openai",
            "--from-pairs",
            str(pairs),
            "--out",
            str(out),
            "--data-dir",
            str(tmp_path / "data"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 2
    assert lines[0]["messages"][-1]["content"] == "330 metres [2]"
    assert lines[1]["messages"][1] == {"role": "user", "content": "Who?"}
    assert "1 examples written" not in result.output and "2 of 3 examples" in result.output

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [GOOD[2]]}) + "\n")
    result = CliRunner().invoke(export, ["validate", str(bad)])
    assert result.exit_code == 1 and "INVALID" in result.output and "line 1" in result.output
    result = CliRunner().invoke(
        export, ["finetune", "--format", "alpaca", "--from-pairs", str(pairs), "--out", str(out)]
    )
    assert result.exit_code == 2 and "only openai" in result.output
