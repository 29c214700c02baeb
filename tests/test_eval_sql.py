"""``grounded eval sql``: loading Spider, the stratified sample, execution match, the ladder
with a scripted LLM (each row's SQL is known, so each row's accuracy is too), the
cross-database few-shot rule, and skipped databases."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from support.fake_llm import FakeLLM, prompt_text
from typer.testing import CliRunner

from eval.cli import app as eval_app
from eval.sql import (
    LADDER,
    SpiderError,
    evaluate_sql,
    is_ordered,
    load_spider,
    plumbing_note,
    same_result,
    sample,
)
from ingest.embedding import Embedder
from ingest.settings import Settings
from service.llm import OpenAIChat
from service.sql import Rows

QUESTIONS = {
    # db, question, gold
    ("zoo", "How many animals are there?", "SELECT count(*) FROM animal"),
    ("zoo", "List the animal names in order.", "SELECT name FROM animal ORDER BY name"),
    ("shop", "How many items are there?", "SELECT count(*) FROM item"),
    (
        "shop",
        "What is the most expensive item?",
        "SELECT name FROM item ORDER BY price DESC LIMIT 1",
    ),
    ("gone", "How many ghosts are there?", "SELECT count(*) FROM ghost"),
}


def make_spider(root: Path) -> Path:
    """A Spider-shaped folder: two databases with files, one (``gone``) without, like wta_1."""
    root.mkdir(parents=True, exist_ok=True)
    examples = [
        {"db_id": db, "question": q, "query": gold}
        for db, q, gold in sorted(QUESTIONS, key=lambda t: (t[0], t[1]))
    ]
    (root / "dev.json").write_text(json.dumps(examples))
    tables = {
        "zoo": "CREATE TABLE animal (id INTEGER PRIMARY KEY, name TEXT);"
        "INSERT INTO animal VALUES (1, 'zebra'), (2, 'ant'), (3, 'lion');",
        "shop": "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, price REAL);"
        "INSERT INTO item VALUES (1, 'pen', 1.5), (2, 'desk', 120.0);",
    }
    for db, script in tables.items():
        (root / "database" / db).mkdir(parents=True)
        conn = sqlite3.connect(root / "database" / db / f"{db}.sqlite")
        conn.executescript(script)
        conn.close()
    return root


def test_load_and_sample(tmp_path: Path) -> None:
    examples = load_spider(make_spider(tmp_path))
    assert len(examples) == 5 and [e.index for e in examples] == list(range(5))
    assert {e.db_id for e in examples if e.database is None} == {"gone"}
    with pytest.raises(SpiderError, match=r"dev\.json"):
        load_spider(tmp_path / "nowhere")


def test_sample_is_stratified_and_seeded() -> None:
    from eval.sql import SpiderExample

    pool = [
        SpiderExample(i, "big" if i < 80 else "small", f"q{i}", "SELECT 1", None)
        for i in range(100)
    ]
    picked = sample(pool, 10, seed=1)
    assert len(picked) == 10 and sum(e.db_id == "small" for e in picked) == 2
    assert picked == sample(pool, 10, seed=1) and picked != sample(pool, 10, seed=2)
    assert [e.index for e in picked] == sorted(e.index for e in picked)
    assert sample(pool, None, seed=1) == pool


def test_execution_match_ignores_order_unless_the_gold_orders() -> None:
    a = Rows(["x"], [(1,), (2,), (2,)], False, 0.0)
    b = Rows(["x"], [(2,), (1,), (2,)], False, 0.0)
    c = Rows(["x"], [(1,), (2,)], False, 0.0)
    assert same_result(a, b, ordered=False) and not same_result(a, b, ordered=True)
    assert not same_result(a, c, ordered=False)  # a multiset: duplicates count
    assert same_result(
        Rows(["x"], [(0.1 + 0.2,)], False, 0), Rows(["y"], [(0.3,)], False, 0), False
    )
    assert is_ordered("SELECT a FROM t ORDER BY a") and not is_ordered("SELECT a FROM t")
    assert not is_ordered("SELECT a FROM t WHERE a IN (SELECT b FROM u ORDER BY b LIMIT 1)")


def ladder_reply(gold: dict[str, str]) -> Any:
    """Zero-shot (no sample values, no examples): nonsense. With sample values: the right
    table, wrong column. With examples (the draft): gold for the zoo only. The final query (a
    second examples call): a query that fails. The correction: gold."""

    def reply(body: dict[str, Any]) -> str:
        text = prompt_text(body)
        question = text.rsplit("Question: ", 1)[1].split("\nSQL:")[0]
        if "This SQL failed" in text:
            return gold[question]
        if "Examples from other databases" in text:
            reply.calls[question] = reply.calls.get(question, 0) + 1  # type: ignore[attr-defined]
            if reply.calls[question] == 1:  # type: ignore[attr-defined]
                return gold[question] if "animal" in gold[question] else "SELECT 0"
            return "SELECT nope FROM nowhere"
        if "sample values" in text:
            return "SELECT id FROM animal" if "animal" in gold[question] else "SELECT id FROM item"
        return "SELECT 42"

    reply.calls = {}  # type: ignore[attr-defined]
    return reply


def test_the_ladder_scores_each_row_and_skips_missing_databases(
    tmp_path: Path, embedder: Embedder
) -> None:
    examples = load_spider(make_spider(tmp_path))
    gold = {e.question: e.gold for e in examples}
    with FakeLLM(ladder_reply(gold)) as llm:
        settings = Settings(llm_base_url=llm.url, llm_max_retries=0, sql_fewshot_k=2)
        report = evaluate_sql(examples, OpenAIChat.from_settings(settings), embedder, settings)
        prompts = [prompt_text(r) for r in llm.requests]
    assert report["model"] == "fake-model" and report["embedding_model"] == embedder.name
    assert report["evaluated"] == 4 and report["skipped"] == 1
    assert report["skipped_by_database"] == {"gone": 1}
    accuracy = {row["name"]: row["correct"] for row in report["rows"]}
    assert list(accuracy) == list(LADDER)
    # zero-shot: SELECT 42 matches nothing; sample values: "SELECT id FROM animal" is wrong
    # for both zoo questions; the draft is gold for the zoo (2); the final query fails (0);
    # self-correction returns gold everywhere (4).
    assert list(accuracy.values()) == [0, 0, 2, 0, 4]
    assert report["rows"][3]["query_errors"] == 4 and report["llm_calls"] == 4 * 5
    # Cross-database: a question never sees an example from its own database.
    for text in prompts:
        if "Examples from other databases" in text:
            question = text.rsplit("Question: ", 1)[1].split("\nSQL:")[0]
            shots = text.split("Examples from other databases")[1].split("Question: " + question)[0]
            own = "animal" if "animal" in gold[question] else "item"
            assert f"FROM {own}" not in shots and "SQL: SELECT" in shots


def test_cli_needs_an_llm_and_reports_the_model(tmp_path: Path) -> None:
    spider = make_spider(tmp_path / "spider")
    runner = CliRunner()
    missing = runner.invoke(eval_app, ["sql", "--dataset", str(spider)])
    assert missing.exit_code == 2 and "needs an LLM" in missing.output
    with FakeLLM("SELECT count(*) FROM animal") as llm:
        result = runner.invoke(
            eval_app,
            ["sql", "--dataset", str(spider), "--json", "--out", str(tmp_path / "r.json")],
            env={"GROUNDED_LLM_BASE_URL": llm.url, "GROUNDED_LLM_MAX_RETRIES": "0"},
        )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["model"] == "fake-model" and summary["skipped"] == 1
    assert summary["rows"][0]["correct"] == 1  # only "How many animals" has that answer
    saved = json.loads((tmp_path / "r.json").read_text())
    assert len(saved["records"]) == 4
    assert len((tmp_path / "r.records.jsonl").read_text().splitlines()) == 4


def test_the_report_says_a_tiny_model_measures_plumbing() -> None:
    assert "plumbing" in (plumbing_note("smollm2") or "")
    assert plumbing_note("gpt-4o") is None
