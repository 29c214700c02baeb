"""The statement guard: exactly one read-only SELECT, or a clear refusal.

The SQL comes from an LLM that reads untrusted questions, so it is checked before it runs:
sqlglot parses it in the database's dialect, and it must be one statement whose root is a
``SELECT`` (``WITH ... SELECT`` and ``UNION`` / ``INTERSECT`` / ``EXCEPT`` of selects included)
with no write, DDL, ``PRAGMA``, ``ATTACH`` or other command anywhere inside, and none of the
functions that reach outside the database. The guard is one layer: SQLite connections are also
opened read-only with ``query_only`` and an authorizer (:mod:`service.sql.database`), so a
statement the parser misreads still cannot write or attach.

Example::

    check_select("SELECT name FROM singer WHERE age > 30")   # returns the statement, trimmed
    check_select("DROP TABLE singer")                        # raises UnsafeSql
    extract_sql("Here it is:\\n```sql\\nSELECT 1;\\n```")     # "SELECT 1"
"""

from __future__ import annotations

import re
import sqlite3

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError


class UnsafeSql(ValueError):
    """The SQL is not exactly one read-only SELECT; the message says why in one line."""


# Expression types that change data or schema, or step outside a plain query. Checked anywhere
# in the tree, not only at the root: "SELECT ... FROM (INSERT ...)" must not pass either.
_FORBIDDEN: tuple[type[exp.Expression], ...] = (
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.Command,  # statements sqlglot does not model (VACUUM, REINDEX, ...)
    exp.Pragma,
    exp.Attach,
    exp.Detach,
    exp.Into,  # SELECT ... INTO new_table
    exp.Set,
    exp.Transaction,
    exp.Commit,
    exp.Rollback,
    exp.Use,
    exp.Copy,
    exp.LoadData,
)
_FORBIDDEN_FUNCTIONS = frozenset(
    {
        "load_extension",
        "readfile",
        "writefile",
        "edit",
        "fts3_tokenizer",
        "pg_read_file",
        "pg_read_binary_file",
        "pg_ls_dir",
        "pg_sleep",
        "lo_import",
        "lo_export",
        "dblink",
        "sleep",
        "benchmark",
        "load_file",
    }
)
# Words that only a statement other than a query starts with; a parse that somehow accepted
# them is refused by name too (and the SQLite authorizer refuses them again).
_FORBIDDEN_WORDS = re.compile(
    r"\b(ATTACH|DETACH|PRAGMA|VACUUM|REINDEX|INSERT|UPDATE|DELETE|REPLACE\s+INTO|CREATE|DROP"
    r"|ALTER|GRANT|REVOKE|TRUNCATE)\b",
    re.IGNORECASE,
)
_QUERY_ROOTS = (exp.Select, exp.SetOperation)


def _dialect(dialect: str) -> str | None:
    """sqlglot's name for a SQLAlchemy dialect ("postgresql" → "postgres"); None: generic."""
    aliases = {"postgresql": "postgres", "mssql": "tsql", "sqlite": "sqlite", "mysql": "mysql"}
    return aliases.get(dialect, dialect if dialect in sqlglot.dialects.DIALECTS else None)


def check_select(sql: str, dialect: str = "sqlite") -> str:
    """``sql`` trimmed of whitespace and a trailing ``;`` when it is exactly one read-only
    SELECT in ``dialect``.

    Raises:
        UnsafeSql: empty, unparsable, several statements, not a SELECT, or a forbidden
            statement or function inside it.
    """
    text = sql.strip().rstrip(";").strip()
    if not text:
        raise UnsafeSql("the SQL is empty")
    try:
        statements = [s for s in sqlglot.parse(text, read=_dialect(dialect)) if s is not None]
    except SqlglotError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnsafeSql(f"the SQL does not parse: {first[:200]}") from None
    if len(statements) != 1:
        raise UnsafeSql(f"exactly one statement is allowed, got {len(statements)}")
    tree = statements[0]
    if not isinstance(tree, _QUERY_ROOTS):
        raise UnsafeSql(f"only a SELECT is allowed, got {tree.key.upper()}")
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN):
            raise UnsafeSql(f"{node.key.upper()} is not allowed in a query")
        if isinstance(node, exp.Func):
            name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
            if name in _FORBIDDEN_FUNCTIONS:
                raise UnsafeSql(f"the function {name}() is not allowed")
    # Keywords outside string literals and quoted names: a last check by name.
    bare = _strip_quoted(text)
    word = _FORBIDDEN_WORDS.search(bare)
    if word:
        raise UnsafeSql(f"{word.group(1).upper()} is not allowed in a query")
    return text


def _strip_quoted(sql: str) -> str:
    """``sql`` with string literals, quoted identifiers and comments blanked out."""
    return re.sub(
        r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\]|--[^\n]*|/\*.*?\*/",
        " ",
        sql,
        flags=re.DOTALL,
    )


_FENCE = re.compile(r"```(?:sql|sqlite)?\s*\n?(.*?)(?:```|$)", re.DOTALL | re.IGNORECASE)
_START = re.compile(r"\b(SELECT|WITH)\b", re.IGNORECASE)


def extract_sql(reply: str) -> str:
    """The first SQL statement of an LLM reply: the fenced block when there is one, else from
    the first ``SELECT`` / ``WITH``; cut after its first complete statement (a ``;`` outside
    quotes), so explanations after it are dropped. The guard still judges what is left."""
    fenced = _FENCE.search(reply)
    text = fenced.group(1) if fenced else reply
    start = _START.search(text)
    if start is None:
        return text.strip()
    text = text[start.start() :]
    for i, char in enumerate(text):
        if char == ";" and sqlite3.complete_statement(text[: i + 1]):
            return text[:i].strip()
    # No terminating ';': a model often appends prose on a new paragraph.
    return re.split(r"\n\s*\n", text, maxsplit=1)[0].strip()
