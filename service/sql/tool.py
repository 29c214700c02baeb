"""SQL as a tool: write a SELECT for a question, run it guarded, answer from its rows.

The steps, each switchable for the ladder of ``grounded eval sql``:

1. **Schema**: CREATE statements with a few sample values per column (``sql_sample_values``).
2. **Few-shot**: question → SQL examples retrieved by question similarity (``sql_fewshot_k``).
3. **Hypothetical SQL** (``sql_hypothetical``): the SQL written with those examples is a draft;
   examples whose SQL resembles the draft are retrieved too, and the SQL is written again.
4. **Run** the SQL read-only with a time and row limit (:mod:`service.sql.database`).
5. **Self-correction** (``sql_self_correct``): when the database refuses the query, the LLM
   sees its SQL and the error and writes it once more.
6. **Answer**: the LLM answers from the rows; the response cites the query and the rows.

Nothing here raises for a bad query or a slow one: :meth:`SqlTool.answer` returns a clear
refusal (``abstained``) with what was tried; an LLM that fails is a ``degraded`` answer.

Example::

    tool = SqlTool(open_database("shop.sqlite"), llm, store=FewShotStore(pairs, embedder),
                   settings=settings)
    result = tool.answer("How many orders shipped in May?")
    result.answer.text, result.sql.query, result.sql.rows
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ingest.settings import Settings

from ..generation import Answer
from ..llm import ChatLLM, LLMError, Message
from .database import Database, Rows, SqlError, json_value
from .fewshot import FewShotStore, SqlPair
from .guard import UnsafeSql, extract_sql

SQL_SYSTEM = (
    "You translate questions into SQL for a {dialect} database. Reply with exactly one SELECT "
    "statement and nothing else."
)
ANSWER_SYSTEM = (
    "Answer the question from the result of the SQL query below, briefly, in one or two "
    "sentences. Use only the rows shown. If the rows do not answer the question, say so."
)
REFUSAL = "I could not answer this from the database: {reason}"


@dataclass(frozen=True)
class SqlOptions:
    """Which steps :meth:`SqlTool.write` takes; defaults from the settings."""

    sample_values: int = 3
    fewshot_k: int = 4
    hypothetical: bool = True
    self_correct: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> SqlOptions:
        return cls(
            settings.sql_sample_values,
            settings.sql_fewshot_k,
            settings.sql_hypothetical,
            settings.sql_self_correct,
        )


@dataclass
class Attempt:
    sql: str
    error: str | None = None  # None: it ran


@dataclass
class SqlTrace:
    """What :meth:`SqlTool.solve` did: the draft, each attempt, and the rows of the last."""

    draft: str | None = None  # the hypothetical SQL (examples by question only)
    examples: list[SqlPair] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    rows: Rows | None = None
    llm_calls: int = 0
    usage: dict[str, int] = field(default_factory=dict)

    @property
    def final(self) -> str | None:
        return self.attempts[-1].sql if self.attempts else None

    @property
    def error(self) -> str | None:
        return self.attempts[-1].error if self.attempts else "no SQL was written"


@dataclass
class SqlCitation:
    """The citation of a SQL answer: the query that ran (or failed) and its rows."""

    route: str
    database: str
    query: str | None
    columns: list[str]
    rows: list[list[Any]]  # the first sql_answer_rows rows, JSON-ready
    row_count: int  # rows fetched, at most sql_max_rows
    truncated: bool  # more rows existed than were fetched
    attempts: list[dict[str, str | None]]
    error: str | None = None


@dataclass
class SqlResult:
    answer: Answer
    sql: SqlCitation
    trace: SqlTrace
    timings: dict[str, float]


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)


def _add_usage(total: dict[str, int], usage: dict[str, int]) -> None:
    for key, value in usage.items():
        total[key] = total.get(key, 0) + value


def format_rows(rows: Rows, limit: int) -> str:
    """A compact pipe table of the first ``limit`` rows (the LLM's view of the result)."""
    head = " | ".join(rows.columns)
    body = [" | ".join(str(json_value(v)) for v in row) for row in rows.rows[:limit]]
    more = len(rows.rows) - limit
    tail = [f"... {more} more row(s)"] if more > 0 else []
    if rows.truncated:
        tail.append("(the result was cut at the row limit)")
    return "\n".join([head, *body, *tail]) if body else f"{head}\n(no rows)"


class SqlTool:
    """One database, its few-shot pool and the LLM that writes its SQL.

    Args:
        database: where queries run (:func:`~service.sql.database.open_database`).
        llm: writes the SQL and the answer.
        settings: limits (``sql_timeout``, ``sql_max_rows``, ``sql_answer_rows``) and default
            :class:`SqlOptions`.
        store: few-shot examples; ``None`` = none.
        route: the route's name, reported in the citation.
        instructions: extra instructions for the answer (the route's ``prompt``).
    """

    def __init__(
        self,
        database: Database,
        llm: ChatLLM,
        settings: Settings,
        *,
        store: FewShotStore | None = None,
        route: str = "sql",
        instructions: str | None = None,
    ) -> None:
        self.database = database
        self.llm = llm
        self.settings = settings
        self.store = store
        self.route = route
        self.instructions = instructions
        self.options = SqlOptions.from_settings(settings)

    # Writing SQL ---------------------------------------------------------------------------

    def prompt(
        self,
        question: str,
        *,
        sample_values: int,
        examples: Sequence[SqlPair] = (),
        feedback: Attempt | None = None,
    ) -> list[Message]:
        """The messages that ask for the SQL of ``question``."""
        parts = [f"Database schema:\n{self.database.schema(sample_values)}"]
        if examples:
            shots = "\n\n".join(f"Question: {e.question}\nSQL: {e.sql}" for e in examples)
            parts.append(f"Examples from other databases (same SQL, other tables):\n\n{shots}")
        if feedback is not None:
            parts.append(
                f"This SQL failed:\n{feedback.sql}\nError: {feedback.error}\n"
                "Write a corrected query."
            )
        parts.append(f"Question: {question}\nSQL:")
        system = SQL_SYSTEM.format(dialect=self.database.dialect)
        return [
            {"role": "system", "content": system},
            {"role": "user", "content": "\n\n".join(parts)},
        ]

    def write(
        self,
        question: str,
        trace: SqlTrace,
        *,
        sample_values: int,
        examples: Sequence[SqlPair] = (),
        feedback: Attempt | None = None,
    ) -> str:
        """One LLM call: the SQL it wrote, extracted from its reply (not yet checked)."""
        messages = self.prompt(
            question, sample_values=sample_values, examples=examples, feedback=feedback
        )
        reply = self.llm.complete(messages, max_tokens=self.settings.sql_max_tokens)
        trace.llm_calls += 1
        _add_usage(trace.usage, reply.usage)
        return extract_sql(reply.text)

    def execute(self, sql: str) -> tuple[Rows | None, str | None]:
        """(rows, None), or (None, why it was refused or failed)."""
        try:
            rows = self.database.run(
                sql, timeout=self.settings.sql_timeout, max_rows=self.settings.sql_max_rows
            )
        except (UnsafeSql, SqlError) as exc:
            return None, str(exc)
        return rows, None

    def solve(
        self,
        question: str,
        options: SqlOptions | None = None,
        *,
        exclude_group: str | None = None,
    ) -> SqlTrace:
        """Write, run and (once) correct the SQL of ``question``.

        Raises:
            LLMError: the LLM failed (the caller degrades or refuses).
        """
        o = options or self.options
        trace = SqlTrace()
        store = self.store if o.fewshot_k > 0 else None
        examples = store.search(question, o.fewshot_k, exclude_group=exclude_group) if store else []
        if store is not None and o.hypothetical:
            trace.draft = self.write(
                question, trace, sample_values=o.sample_values, examples=examples
            )
            examples = store.search(
                question, o.fewshot_k, draft_sql=trace.draft, exclude_group=exclude_group
            )
        trace.examples = examples
        sql = self.write(question, trace, sample_values=o.sample_values, examples=examples)
        rows, error = self.execute(sql)
        trace.attempts.append(Attempt(sql, error))
        if error is not None and o.self_correct:
            sql = self.write(
                question,
                trace,
                sample_values=o.sample_values,
                examples=examples,
                feedback=trace.attempts[-1],
            )
            rows, error = self.execute(sql)
            trace.attempts.append(Attempt(sql, error))
        trace.rows = rows
        return trace

    # Answering -----------------------------------------------------------------------------

    def answer(self, question: str, *, instructions: str | None = None) -> SqlResult:
        """The answer to ``question`` from the database, citing the query and its rows; a
        refused or failed query is a clear abstention, a failing LLM a degraded answer."""
        started = time.perf_counter()
        timings: dict[str, float] = {}
        try:
            trace = self.solve(question)
        except SqlError as exc:  # the schema could not be read: nothing was asked
            timings["sql_ms"] = _ms(started)
            trace = SqlTrace()
            answer = Answer(REFUSAL.format(reason=str(exc)), "sql", abstained=True)
            return SqlResult(answer, self.citation(trace), trace, timings)
        except LLMError as exc:
            timings["sql_ms"] = _ms(started)
            trace = SqlTrace()
            answer = Answer(
                REFUSAL.format(reason=f"the LLM that writes SQL failed ({exc.reason})"),
                "sql",
                abstained=True,
                degraded=True,
                degraded_reason=exc.reason,
            )
            return SqlResult(answer, self.citation(trace), trace, timings)
        timings["sql_ms"] = _ms(started)
        if trace.rows is None:
            answer = Answer(
                REFUSAL.format(reason=trace.error), "sql", abstained=True, usage=trace.usage
            )
            return SqlResult(answer, self.citation(trace), trace, timings)
        t = time.perf_counter()
        answer = self._phrase(question, trace, instructions)
        timings["generate_ms"] = _ms(t)
        return SqlResult(answer, self.citation(trace), trace, timings)

    def _phrase(self, question: str, trace: SqlTrace, instructions: str | None) -> Answer:
        assert trace.rows is not None
        table = format_rows(trace.rows, self.settings.sql_answer_rows)
        system = "\n\n".join(filter(None, [ANSWER_SYSTEM, self.instructions, instructions]))
        messages: list[Message] = [
            {"role": "system", "content": system},
            {
                "role": "user",
                "content": f"SQL:\n{trace.final}\n\nResult:\n{table}\n\nQuestion: {question}",
            },
        ]
        try:
            reply = self.llm.complete(messages, max_tokens=self.settings.llm_max_tokens)
        except LLMError as exc:
            # The rows are the answer; the LLM only words them.
            text = f"The query returned:\n{table}"
            return Answer(text, "sql", usage=trace.usage, degraded=True, degraded_reason=exc.reason)
        trace.llm_calls += 1
        _add_usage(trace.usage, reply.usage)
        return Answer(reply.text, "sql", usage=trace.usage, model=reply.model)

    def citation(self, trace: SqlTrace) -> SqlCitation:
        rows = trace.rows
        shown = rows.rows[: self.settings.sql_answer_rows] if rows else []
        return SqlCitation(
            route=self.route,
            database=self.database.name,
            query=trace.final,
            columns=rows.columns if rows else [],
            rows=[[json_value(v) for v in row] for row in shown],
            row_count=len(rows.rows) if rows else 0,
            truncated=rows.truncated if rows else False,
            attempts=[{"sql": a.sql, "error": a.error} for a in trace.attempts],
            error=None if rows is not None else trace.error,
        )
