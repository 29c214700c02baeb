"""sql routes: the statement guard, the read-only database with its limits, few-shot retrieval,
the tool's write → run → correct → answer loop, and the API answering with the query and rows.

The databases are tiny SQLite files built here; the LLM is the scripted fake server, so every
reply is known and the tests can say exactly what must happen."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from support.fake_llm import FakeLLM, prompt_text
from support.llm_support import llm_pipeline
from support.paths import SHARED

from ingest.embedding import Embedder
from ingest.settings import Route, Settings
from service.api.app import create_app
from service.llm import OpenAIChat
from service.pipeline import NotConfigured, QueryOptions, RagPipeline
from service.retrieval import SearchParams
from service.sql import (
    FewShotStore,
    SqlError,
    SqlPair,
    SqlTool,
    UnsafeSql,
    check_select,
    extract_sql,
    open_database,
)
from service.sql import database as database_module


def make_shop(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT, country TEXT);
        CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customer(id),
                             total REAL, shipped TEXT);
        INSERT INTO customer VALUES (1, 'Ada', 'UK'), (2, 'Linus', 'FI'), (3, 'Grace', 'US');
        INSERT INTO orders VALUES (1, 1, 10.5, '2024-05-02'), (2, 1, 99.0, '2024-05-20'),
                                  (3, 2, 5.0, '2024-06-01'), (4, 3, 42.0, NULL);
        """
    )
    conn.commit()
    conn.close()
    return path


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    return make_shop(tmp_path / "shop.sqlite")


# The guard -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT name FROM customer WHERE country = 'UK'",
        "  select count(*) from orders;  ",
        "WITH big AS (SELECT * FROM orders WHERE total > 20) SELECT count(*) FROM big",
        "SELECT name FROM customer UNION SELECT shipped FROM orders",
        "SELECT name FROM customer EXCEPT SELECT name FROM customer WHERE id = 1",
        "SELECT 'DROP TABLE customer; PRAGMA x' AS text",  # inside a string: just text
        "SELECT replace(name, 'a', 'b') FROM customer",  # the function, not REPLACE INTO
        "SELECT update_date FROM t",  # a column whose name starts with a keyword
    ],
)
def test_guard_allows_one_select(sql: str) -> None:
    assert check_select(sql) == sql.strip().rstrip(";").strip()


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("", "empty"),
        ("SELECT 1; SELECT 2", "exactly one statement"),
        ("SELECT * FROM customer; DROP TABLE customer", "exactly one statement"),
        ("PRAGMA table_info(customer)", "only a SELECT"),
        ("ATTACH DATABASE '/tmp/x.db' AS x", "only a SELECT"),
        ("DETACH DATABASE x", "only a SELECT"),
        ("INSERT INTO customer VALUES (9, 'Eve', 'XX')", "only a SELECT"),
        ("UPDATE customer SET name = 'Eve'", "only a SELECT"),
        ("DELETE FROM customer", "only a SELECT"),
        ("REPLACE INTO customer VALUES (1, 'Eve', 'XX')", "only a SELECT"),
        ("CREATE TABLE t (a)", "only a SELECT"),
        ("DROP TABLE customer", "only a SELECT"),
        ("ALTER TABLE customer ADD COLUMN x", "only a SELECT"),
        ("VACUUM", "only a SELECT"),
        ("SELECT load_extension('evil')", "load_extension"),
        ("SELECT * FROM (SELECT 1) WHERE 1 = (SELECT 1) -- ok\n; DELETE FROM t", "exactly one"),
        ("SELEKT name FROM customer", "does not parse"),
    ],
)
def test_guard_refuses_everything_else(sql: str, reason: str) -> None:
    with pytest.raises(UnsafeSql, match=reason):
        check_select(sql)


def test_every_spider_gold_query_passes_the_guard() -> None:
    gold = SHARED / "spider" / "dev_gold.sql"
    if not gold.is_file():
        pytest.skip("Spider is not in ../shared/datasets")
    queries = [line.rsplit("\t", 1)[0] for line in gold.read_text().splitlines() if line]
    refused = []
    for q in queries:
        try:
            check_select(q)
        except UnsafeSql as exc:
            refused.append((q, str(exc)))
    assert len(queries) == 1034 and refused == []


def test_extract_sql_takes_the_first_statement_of_a_reply() -> None:
    assert extract_sql("Sure:\n```sql\nSELECT a FROM t;\n```\nIt selects a.") == "SELECT a FROM t"
    assert (
        extract_sql("SELECT a FROM t WHERE b = ';' ; then more") == "SELECT a FROM t WHERE b = ';'"
    )
    assert extract_sql("Query: select a\nfrom t\n\nThis returns a.") == "select a\nfrom t"
    assert extract_sql("I cannot help.") == "I cannot help."  # the guard refuses it later


# The database ------------------------------------------------------------------------------


def test_schema_has_create_statements_keys_and_sample_values(shop: Path) -> None:
    db = open_database(str(shop))
    schema = db.schema(sample_values=2)
    assert "CREATE TABLE customer (" in schema and "PRIMARY KEY (id)" in schema
    assert "FOREIGN KEY (customer_id) REFERENCES customer(id)" in schema
    assert "name: 'Ada', 'Linus'" in schema and "'Grace'" not in schema  # two values each
    assert "sample values" not in db.schema(sample_values=0)
    assert db.name == "shop.sqlite" and str(shop.parent) not in db.name  # no full path


def test_rows_are_limited_and_the_time_limit_stops_a_query(shop: Path) -> None:
    db = open_database(f"sqlite:///{shop}")
    rows = db.run("SELECT name FROM customer ORDER BY id", timeout=5, max_rows=2)
    assert rows.columns == ["name"] and rows.rows == [("Ada",), ("Linus",)] and rows.truncated
    assert not db.run("SELECT name FROM customer", timeout=5, max_rows=3).truncated
    endless = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    )
    with pytest.raises(SqlError, match=r"longer than the limit of 0\.2 s"):
        db.run(endless, timeout=0.2, max_rows=10)
    with pytest.raises(SqlError, match="no such column: nope"):
        db.run("SELECT nope FROM customer", timeout=5, max_rows=10)


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM customer",
        "INSERT INTO customer VALUES (9, 'Eve', 'XX')",
        "PRAGMA query_only = OFF",
        "ATTACH DATABASE ':memory:' AS other",
        "CREATE TABLE evil (a)",
    ],
)
def test_the_connection_refuses_writes_even_past_the_guard(
    shop: Path, statement: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Suppose the parser were fooled: the read-only, query_only, authorized connection is the
    # second wall.
    monkeypatch.setattr(database_module, "check_select", lambda sql, dialect: sql)
    db = open_database(str(shop))
    with pytest.raises(SqlError):
        db.run(statement, timeout=5, max_rows=10)
    conn = sqlite3.connect(shop)
    assert conn.execute("SELECT count(*) FROM customer").fetchone() == (3,)
    assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (2,)
    conn.close()


def test_a_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'nope\.sqlite' does not exist"):
        open_database(str(tmp_path / "nope.sqlite"))
    assert not (tmp_path / "nope.sqlite").exists()  # read-only mode never creates one


# Few-shot retrieval ------------------------------------------------------------------------


def test_fewshot_by_question_by_draft_sql_and_never_the_excluded_group(embedder: Embedder) -> None:
    pool = [
        SqlPair("How many singers are there?", "SELECT count(*) FROM singer", "music"),
        SqlPair("How many dogs are there?", "SELECT count(*) FROM dogs", "pets"),
        SqlPair("List the names of all cities.", "SELECT name FROM city", "geo"),
        SqlPair(
            "Which country has the most airports?",
            "SELECT country FROM airports GROUP BY country ORDER BY count(*) DESC LIMIT 1",
            "air",
        ),
    ]
    store = FewShotStore(pool, embedder)
    by_question = store.search("How many pets are there?", k=1)
    assert by_question[0].group == "pets"
    assert store.search("How many pets are there?", k=1, exclude_group="pets")[0].group == "music"
    draft = "SELECT owner FROM pets GROUP BY owner ORDER BY count(*) DESC LIMIT 1"
    both = store.search("Who owns the most pets?", k=2, draft_sql=draft, exclude_group="pets")
    assert "air" in [p.group for p in both]  # the same query shape, found through the draft
    assert all(p.group != "pets" for p in both) and len(both) == 2
    assert FewShotStore([], embedder).search("anything", k=3) == []


# The tool ----------------------------------------------------------------------------------


def sql_reply(by_question: dict[str, list[str]], answer: str = "Ada ordered twice.") -> Any:
    """A fake LLM: SQL prompts take the next scripted SQL of their question (the last one
    repeats); answer prompts get ``answer``."""

    def reply(body: dict[str, Any]) -> str:
        text = prompt_text(body)
        if "Answer the question from the result" in text:
            return answer
        question = text.rsplit("Question: ", 1)[1].split("\nSQL:")[0]
        replies = by_question[question]
        return replies.pop(0) if len(replies) > 1 else replies[0]

    return reply


def tool_for(shop: Path, url: str, **overrides: Any) -> SqlTool:
    settings = Settings(llm_base_url=url, llm_max_retries=0, llm_timeout=5, **overrides)
    return SqlTool(open_database(str(shop)), OpenAIChat.from_settings(settings), settings)


def test_a_failed_query_is_corrected_once_with_the_error(shop: Path) -> None:
    question = "How many orders did Ada place?"
    script = {
        question: [
            "SELECT count(*) FROM orders WHERE customer = 'Ada'",  # no such column
            "```sql\nSELECT count(*) FROM orders JOIN customer ON customer.id = customer_id "
            "WHERE name = 'Ada';\n```",
        ]
    }
    with FakeLLM(sql_reply(script)) as llm:
        result = tool_for(shop, llm.url).answer(question)
        retry_prompt = prompt_text(llm.requests[1])
    assert "no such column: customer" in retry_prompt and "This SQL failed" in retry_prompt
    assert result.answer.text == "Ada ordered twice." and not result.answer.abstained
    assert result.sql.rows == [[2]] and result.sql.columns == ["count(*)"]
    assert result.sql.query is not None and "JOIN customer" in result.sql.query
    assert [a["error"] is None for a in result.sql.attempts] == [False, True]
    assert "Result:\ncount(*)\n2" in prompt_text(llm.requests[2])  # answered from the rows


def test_unsafe_sql_is_refused_clearly_and_nothing_changes(shop: Path) -> None:
    question = "Remove all customers"
    script = {question: ["DROP TABLE customer", "ATTACH DATABASE 'x.db' AS x"]}
    with FakeLLM(sql_reply(script)) as llm:
        result = tool_for(shop, llm.url).answer(question)
    assert result.answer.abstained and result.answer.generator == "sql"
    assert result.answer.text.startswith("I could not answer this from the database:")
    assert "only a SELECT is allowed, got ATTACH" in result.answer.text
    assert "got DROP" in (result.sql.attempts[0]["error"] or "")
    assert result.sql.rows == [] and result.sql.error and len(result.sql.attempts) == 2
    conn = sqlite3.connect(shop)
    assert conn.execute("SELECT count(*) FROM customer").fetchone() == (3,)
    conn.close()


def test_without_self_correction_there_is_no_second_attempt(shop: Path) -> None:
    question = "Total of all orders?"
    with FakeLLM(sql_reply({question: ["SELECT sum(nope) FROM orders"]})) as llm:
        result = tool_for(shop, llm.url, sql_self_correct=False).answer(question)
        assert len(llm.requests) == 1
    assert result.answer.abstained and "no such column: nope" in result.answer.text


def test_an_llm_failure_is_a_degraded_refusal_not_an_error(shop: Path) -> None:
    with FakeLLM("unused") as llm:
        llm.script("500")
        result = tool_for(shop, llm.url).answer("How many customers?")
    assert result.answer.abstained and result.answer.degraded
    assert "the LLM that writes SQL failed" in result.answer.text
    assert "HTTP 500" in (result.answer.degraded_reason or "")


def test_hypothetical_sql_retrieves_examples_by_the_draft(shop: Path, embedder: Embedder) -> None:
    question = "Which country has the most customers?"
    draft = "SELECT country FROM customer GROUP BY country ORDER BY count(*) DESC LIMIT 1"
    pairs = [
        SqlPair("How many singers are there?", "SELECT count(*) FROM singer"),
        SqlPair(
            "Name the airline with the most flights.",
            "SELECT airline FROM flights GROUP BY airline ORDER BY count(*) DESC LIMIT 1",
        ),
    ]
    with FakeLLM(sql_reply({question: [draft, draft]}, "The UK (tied).")) as llm:
        settings = Settings(llm_base_url=llm.url, llm_max_retries=0, sql_fewshot_k=1)
        tool = SqlTool(
            open_database(str(shop)),
            OpenAIChat.from_settings(settings),
            settings,
            store=FewShotStore(pairs, embedder),
        )
        result = tool.answer(question)
        first, second = (prompt_text(r) for r in llm.requests[:2])
    assert result.trace.draft == draft and result.trace.llm_calls == 3
    assert "SELECT airline FROM flights" in second  # found through the draft's shape
    assert "Examples from other databases" in first
    assert result.sql.row_count == 1


# The service and its API -------------------------------------------------------------------


def routes_for(shop: Path) -> list[Route]:
    return [
        Route(
            name="shop",
            kind="sql",
            database=str(shop),
            description="Orders, customers, order totals and shipping dates of the shop database",
            sql_examples=[{"question": "How many customers are there?", "sql": "SELECT 1"}],
        ),
        Route(name="docs", description="Cats, pets, search engines and bread", collection="kb"),
    ]


def test_api_answers_a_sql_route_with_the_query_and_rows(
    tmp_path: Path, shop: Path, embedder: Embedder
) -> None:
    question = "How many orders were shipped in May 2024?"
    script = {
        question: ["SELECT count(*) FROM orders WHERE shipped LIKE '2024-05%'"],
        "Delete every order of every customer": ["DELETE FROM orders", "DROP TABLE orders"],
    }
    with FakeLLM(sql_reply(script, "Two orders shipped in May 2024.")) as llm:
        pipeline = llm_pipeline(tmp_path, embedder, llm.url, routes=routes_for(shop))
        with TestClient(create_app(pipeline)) as client:
            body = client.post("/v1/query", json={"query": question}).json()
            assert body["route"]["name"] == "shop" and body["generator"] == "sql"
            assert body["answer"] == "Two orders shipped in May 2024."
            assert body["sql"]["query"].startswith("SELECT count(*) FROM orders")
            assert body["sql"]["rows"] == [[2]] and body["sql"]["database"] == "shop.sqlite"
            assert body["results"] == [] and body["citations"] == [] and not body["abstained"]
            assert body["warnings"] == [] and body["timings"]["sql_ms"] > 0

            refused = client.post(
                "/v1/query", json={"query": "Delete every order of every customer"}
            )
            assert refused.status_code == 200 and refused.json()["abstained"]
            assert refused.json()["route"]["name"] == "shop"
            assert (
                "is not allowed" in refused.json()["answer"]
                or "only a SELECT" in (refused.json()["answer"])
            )
            assert refused.json()["sql"]["error"] and refused.json()["sql"]["rows"] == []

            searched = client.post("/v1/search", json={"query": question}).json()
            assert searched["results"] == [] and "answers with SQL" in searched["warnings"][0]

            chat = client.post(
                "/v1/chat/completions",
                json={"model": "grounded", "messages": [{"role": "user", "content": question}]},
            ).json()
            assert chat["grounded"]["sql"]["rows"] == [[2]]
            assert chat["choices"][0]["message"]["content"] == "Two orders shipped in May 2024."

            with client.stream("POST", "/v1/query", json={"query": question, "stream": True}) as r:
                events = [line for line in r.iter_lines() if line.startswith("data: ")]
            done = json.loads(events[-1][len("data: ") :])
            assert done["sql"]["rows"] == [[2]] and done["answer"].startswith("Two orders")

            docs = client.post("/v1/query", json={"query": "why do cats purr?"}).json()
            assert docs["route"]["name"] == "docs" and docs["sql"] is None
    orders = sqlite3.connect(shop).execute("SELECT count(*) FROM orders").fetchone()
    assert orders == (4,)


def test_a_sql_route_needs_an_llm_and_its_database(tmp_path: Path, shop: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", routes=routes_for(shop))
    with pytest.raises(NotConfigured, match="'shop' need an LLM to write SQL"):
        RagPipeline.from_settings(settings)
    missing = Route(
        name="gone", kind="sql", database=str(tmp_path / "gone.sqlite"), description="x"
    )
    with FakeLLM("x") as llm:
        settings = Settings(data_dir=tmp_path / "data", routes=[missing], llm_base_url=llm.url)
        with pytest.raises(NotConfigured, match=r"'gone': SQLite database 'gone\.sqlite' does not"):
            RagPipeline.from_settings(settings)


def test_route_kind_and_database_go_together() -> None:
    with pytest.raises(ValidationError, match="sql route: set its database"):
        Route(name="db", description="x", kind="sql")
    with pytest.raises(ValidationError, match='set kind = "sql"'):
        Route(name="db", description="x", database="shop.sqlite")
    with pytest.raises(ValidationError, match="searches no collection"):
        Route(name="db", description="x", kind="sql", database="a.sqlite", collection="kb")


def test_a_pipeline_without_an_llm_refuses_a_sql_question_with_a_4xx(
    tmp_path: Path, shop: Path, embedder: Embedder
) -> None:
    pipeline = llm_pipeline(tmp_path, embedder, None)
    pipeline.settings = pipeline.settings.model_copy(update={"routes": routes_for(shop)})
    from service.pipeline import build_router

    pipeline.router = build_router(pipeline.settings, embedder, None)
    with pytest.raises(NotConfigured, match="needs an LLM"):
        pipeline.query(
            SearchParams("How many orders shipped in May?", collection="kb"),
            QueryOptions(route=True),
        )
    with TestClient(create_app(pipeline)) as client:
        response = client.post("/v1/query", json={"query": "How many orders shipped in May?"})
    assert response.status_code == 422 and "needs an LLM" in response.json()["detail"]


@pytest.mark.slow  # a real llama.cpp server with SmolLM2
def test_a_real_small_model_gets_rows_or_a_clear_refusal(shop: Path, llm_server: str) -> None:
    # SmolLM2-135M writes poor SQL; what is proven is the plumbing around a real server: its
    # reply is extracted, guarded and run, and the outcome is rows or a refusal, never a crash.
    settings = Settings(
        llm_base_url=llm_server,
        llm_timeout=120,
        llm_deadline=300,
        sql_fewshot_k=0,
        sql_max_tokens=64,
        llm_max_tokens=48,
    )
    tool = SqlTool(open_database(str(shop)), OpenAIChat.from_settings(settings), settings)
    result = tool.answer("How many customers are there?")
    assert result.sql.attempts and result.trace.llm_calls >= 1
    if result.answer.abstained:
        assert result.answer.text.startswith("I could not answer this from the database:")
        assert result.sql.error
    else:
        assert result.sql.query and result.sql.columns and result.answer.model == "smollm2"
    conn = sqlite3.connect(shop)
    assert conn.execute("SELECT count(*) FROM customer").fetchone() == (3,)
    conn.close()


def test_a_sqlalchemy_url_reads_and_rolls_back(shop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sqlalchemy")
    db = database_module.SqlAlchemyDatabase(f"sqlite+pysqlite:///{shop}")
    assert db.dialect == "sqlite" and "CREATE TABLE orders (" in db.schema(sample_values=1)
    assert "name: 'Ada'" in db.schema(sample_values=1)
    rows = db.run("SELECT id FROM orders ORDER BY id", timeout=5, max_rows=3)
    assert rows.rows == [(1,), (2,), (3,)] and rows.truncated
    with pytest.raises(UnsafeSql):
        db.run("DELETE FROM orders", timeout=5, max_rows=3)
    # Past the guard, the transaction is rolled back: nothing the statement did remains.
    monkeypatch.setattr(database_module, "check_select", lambda sql, dialect: sql)
    db.run("DELETE FROM orders RETURNING id", timeout=5, max_rows=10)
    db.close()
    assert sqlite3.connect(shop).execute("SELECT count(*) FROM orders").fetchone() == (4,)
