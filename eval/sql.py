"""Execution accuracy of sql routes on Spider dev, as a ladder of the techniques.

Each question is answered by the service's own :class:`~service.sql.SqlTool` on its database,
and the rows of the predicted SQL are compared with the rows of the gold SQL, both run with the
same read-only time and row limits. Rows compare as a multiset (order ignored) unless the gold
query has a top-level ``ORDER BY``, then as a list; columns compare in order. A predicted query
that is refused, fails or times out is wrong, as is a question the LLM failed on. Examples whose
database file is missing (Spider's ``wta_1``) are *skipped*, never wrong.

The ladder (every row adds one step to the one above):

1. **zero-shot**: CREATE statements only.
2. **+ sample values**: the same schema with ``sql_sample_values`` values per column.
3. **+ few-shot**: ``k`` question → SQL examples retrieved by question similarity.
4. **+ hypothetical SQL**: row 3's SQL is the draft; examples whose SQL resembles it are
   retrieved too, and the SQL is written again.
5. **+ self-correction**: when row 4's SQL fails, once more with the database's error.

Rows 3 to 5 are one :meth:`SqlTool.solve` — the draft, the first attempt and the last — so the
served path is what is measured, at four LLM calls per question or fewer. The few-shot pool is
every dev example of the *other* databases (Spider's train split is not here): no example from
the database being asked is ever shown.

Example::

    examples = sample(load_spider(Path("../shared/datasets/spider")), limit=100, seed=10)
    report = evaluate_sql(examples, llm, embedder, settings)
    report["rows"][0]["execution_accuracy"]
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp

from ingest.embedding import Embedder
from ingest.settings import Settings
from service.llm import ChatLLM, LLMError
from service.sql import FewShotStore, Rows, SqlOptions, SqlPair, SqlTool, open_database

LADDER = (
    "zero-shot (schema only)",
    "+ schema sample values",
    "+ retrieved few-shot examples",
    "+ hypothetical-SQL retrieval",
    "+ self-correction",
)
PLUMBING_NOTE = (
    "{model} is a tiny model: these figures measure the plumbing, not what the techniques are "
    "worth with a capable model."
)


class SpiderError(ValueError):
    """The folder is not a Spider release (dev.json, database/<db>/<db>.sqlite)."""


@dataclass(frozen=True)
class SpiderExample:
    index: int  # position in dev.json
    db_id: str
    question: str
    gold: str
    database: Path | None  # None: the database file is missing (skipped, never wrong)


def load_spider(folder: Path, split: str = "dev") -> list[SpiderExample]:
    """``<split>.json`` of a Spider folder, each example with its SQLite file (or ``None``)."""
    path = folder / f"{split}.json"
    if not path.is_file():
        raise SpiderError(f"{path} does not exist: pass a Spider folder (dev.json, database/)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SpiderError(f"{path} is not JSON: {exc}") from None
    examples = []
    for i, item in enumerate(raw):
        try:
            db_id, question, gold = item["db_id"], item["question"], item["query"]
        except (KeyError, TypeError):
            raise SpiderError(f"{path}: example {i} lacks db_id, question or query") from None
        db = folder / "database" / db_id / f"{db_id}.sqlite"
        examples.append(SpiderExample(i, db_id, question, gold, db if db.is_file() else None))
    return examples


def sample(examples: Sequence[SpiderExample], limit: int | None, seed: int) -> list[SpiderExample]:
    """``limit`` examples stratified over databases (each gets its share of the set, by
    largest remainder), drawn with ``seed``; all of them when ``limit`` is ``None``."""
    if limit is None or limit >= len(examples):
        return list(examples)
    by_db: dict[str, list[SpiderExample]] = defaultdict(list)
    for e in examples:
        by_db[e.db_id].append(e)
    exact = {db: limit * len(items) / len(examples) for db, items in by_db.items()}
    counts = {db: int(share) for db, share in exact.items()}
    by_remainder = sorted(exact, key=lambda db: (-(exact[db] - counts[db]), db))
    for db in by_remainder[: limit - sum(counts.values())]:
        counts[db] += 1
    rng = random.Random(seed)
    chosen = [e for db in sorted(by_db) for e in rng.sample(by_db[db], counts[db])]
    return sorted(chosen, key=lambda e: e.index)


def is_ordered(gold: str) -> bool:
    """The gold query orders its result at the top level (then row order counts)."""
    try:
        tree = sqlglot.parse_one(gold, read="sqlite")
    except sqlglot.errors.SqlglotError:
        return "order by" in gold.lower()
    return isinstance(tree, exp.Query) and tree.args.get("order") is not None


def _cell(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value


def same_result(predicted: Rows, gold: Rows, ordered: bool) -> bool:
    """Execution match: the same rows (as a list when ``ordered``, else as a multiset)."""
    a = [tuple(_cell(v) for v in row) for row in predicted.rows]
    b = [tuple(_cell(v) for v in row) for row in gold.rows]
    return a == b if ordered else Counter(a) == Counter(b)


def evaluate_sql(
    examples: Sequence[SpiderExample],
    llm: ChatLLM,
    embedder: Embedder,
    settings: Settings,
    *,
    pool: Sequence[SpiderExample] | None = None,
    tick: Callable[[int], None] | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The ladder's execution accuracy over ``examples``.

    Args:
        pool: few-shot candidates (default: ``examples``); an example never gets one of its
            own database.
        tick: called with the number of examples done (answered or skipped).
        on_record: called with each question's record as soon as it is scored (a long run
            that is stopped keeps what it measured).

    Returns:
        ``{"model", "questions", "evaluated", "skipped", "rows": [...], "records": [...]}``.
    """
    if settings.sql_fewshot_k < 1:
        raise ValueError("the ladder needs sql_fewshot_k >= 1 for its few-shot rows")
    store = FewShotStore(
        [SqlPair(e.question, e.gold, e.db_id) for e in (pool if pool is not None else examples)],
        embedder,
    )
    tools: dict[str, SqlTool] = {}
    correct = [0] * len(LADDER)
    failed = [0] * len(LADDER)  # refused, errored or timed out (the LLM failing counts apart)
    llm_failures = 0
    calls = 0
    skipped: Counter[str] = Counter()
    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    by_db: dict[str, list[SpiderExample]] = defaultdict(list)
    for example in examples:
        by_db[example.db_id].append(example)
    for db_id, group in by_db.items():
        database = group[0].database
        if database is None:
            skipped[db_id] += len(group)
            if tick:
                tick(len(group))
            continue
        tool = tools.setdefault(
            db_id, SqlTool(open_database(str(database)), llm, settings, store=store)
        )
        golds = {e.index: tool.execute(e.gold) for e in group}
        runnable = [e for e in group if golds[e.index][0] is not None]
        for e in group:
            if golds[e.index][0] is None:  # not the model's fault: skip, and say so
                skipped[f"{db_id} (gold failed: {golds[e.index][1]})"] += 1
        # Zero-shot for the whole database first, then the rest: consecutive prompts then
        # share their schema, which an LLM server's prompt cache reuses.
        zero = {e.index: _zero_shot(tool, e) for e in runnable}
        for example in runnable:
            predictions, llm_error, used = _ladder(tool, example, zero[example.index])
            calls += used
            llm_failures += llm_error is not None
            gold = golds[example.index][0]
            assert gold is not None
            ordered = is_ordered(example.gold)
            record: dict[str, Any] = {
                "index": example.index,
                "db_id": example.db_id,
                "question": example.question,
                "gold": example.gold,
                "llm_error": llm_error,
                "rows": [],
            }
            for i, sql in enumerate(predictions):
                rows, error = tool.execute(sql) if sql is not None else (None, llm_error)
                ok = rows is not None and same_result(rows, gold, ordered)
                correct[i] += ok
                failed[i] += sql is not None and rows is None
                record["rows"].append({"sql": sql, "correct": ok, "error": error})
            records.append(record)
            if on_record:
                on_record(record)
            if tick:
                tick(1)
        if tick:
            tick(len(group) - len(runnable))
    records.sort(key=lambda r: int(r["index"]))
    evaluated = len(records)
    return {
        "model": llm.model,
        "embedding_model": embedder.name,
        "questions": len(examples),
        "evaluated": evaluated,
        "skipped": sum(skipped.values()),
        "skipped_by_database": dict(skipped),
        "llm_failures": llm_failures,
        "llm_calls": calls,
        "seconds": round(time.perf_counter() - started, 1),
        "settings": {
            "sql_sample_values": settings.sql_sample_values,
            "sql_fewshot_k": settings.sql_fewshot_k,
            "sql_timeout": settings.sql_timeout,
            "sql_max_rows": settings.sql_max_rows,
        },
        "rows": [
            {
                "name": name,
                "execution_accuracy": round(correct[i] / evaluated, 4) if evaluated else None,
                "correct": correct[i],
                "query_errors": failed[i],
            }
            for i, name in enumerate(LADDER)
        ],
        "records": records,
    }


def _zero_shot(tool: SqlTool, example: SpiderExample) -> tuple[str | None, str | None, int]:
    """Row 1: (SQL or None, the LLM's error, calls)."""
    options = SqlOptions(sample_values=0, fewshot_k=0, hypothetical=False, self_correct=False)
    try:
        trace = tool.solve(example.question, options, exclude_group=example.db_id)
    except LLMError as exc:
        return None, exc.reason, 1
    return trace.final, None, trace.llm_calls


def _ladder(
    tool: SqlTool, example: SpiderExample, zero: tuple[str | None, str | None, int]
) -> tuple[list[str | None], str | None, int]:
    """The SQL of each ladder row (``None`` where the LLM failed), the LLM's first error, and
    its calls; ``zero`` is row 1's result from :func:`_zero_shot`."""
    k, samples = tool.settings.sql_fewshot_k, max(tool.settings.sql_sample_values, 1)
    predictions: list[str | None] = [zero[0]] + [None] * (len(LADDER) - 1)
    error, calls = zero[1], zero[2]
    try:
        options = SqlOptions(
            sample_values=samples, fewshot_k=0, hypothetical=False, self_correct=False
        )
        trace = tool.solve(example.question, options, exclude_group=example.db_id)
        calls += trace.llm_calls
        predictions[1] = trace.final
        full = SqlOptions(sample_values=samples, fewshot_k=k, hypothetical=True, self_correct=True)
        trace = tool.solve(example.question, full, exclude_group=example.db_id)
        calls += trace.llm_calls
    except LLMError as exc:
        return predictions, error or exc.reason, calls
    predictions[2] = trace.draft
    predictions[3] = trace.attempts[0].sql
    predictions[4] = trace.final
    return predictions, error, calls


def plumbing_note(model: str) -> str | None:
    """The caveat a report carries when the model is a tiny offline one."""
    tiny = any(name in model.lower() for name in ("smollm", "135m", "360m"))
    return PLUMBING_NOTE.format(model=model) if tiny else None
