"""Databases a sql route reads: SQLite files (standard library) or any SQLAlchemy URL.

Every query runs read-only, under a time limit and a row limit, after :func:`check_select`.
SQLite is opened with ``mode=ro``, ``PRAGMA query_only`` is set before the query's connection is
handed out, and an authorizer allows only reading and functions (no write, attach or pragma
reaches the engine even if the parser were fooled); a progress handler stops a query past its
deadline. Other databases run inside a transaction that is always rolled back, marked
``READ ONLY`` where the dialect supports it (PostgreSQL also gets a ``statement_timeout``).

The schema prompt is CREATE statements rebuilt from the catalogue (columns, types, primary and
foreign keys) with a few distinct sample values per column, so the model sees how values are
spelled (``'France'`` or ``'FR'``?).

Example::

    db = open_database("../shared/datasets/spider/database/singer/singer.sqlite")
    print(db.schema(sample_values=3))
    rows = db.run("SELECT name FROM singer", timeout=5.0, max_rows=100)
    rows.columns, rows.rows, rows.truncated
"""

from __future__ import annotations

import math
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from .guard import check_select


class SqlError(Exception):
    """The database refused or failed the query (syntax, unknown column, time limit)."""


class DatabaseUnavailable(ValueError):
    """The route's database cannot be opened (a missing file, a bad URL)."""


@dataclass
class Rows:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool  # more rows than max_rows existed; only the first max_rows are kept
    elapsed_ms: float


class Database(Protocol):
    name: str  # for display: a file name or a URL without credentials, never a full path
    dialect: str

    def schema(self, sample_values: int = 3) -> str: ...

    def run(self, sql: str, *, timeout: float, max_rows: int) -> Rows: ...

    def close(self) -> None: ...


def json_value(value: Any) -> Any:
    """A cell as JSON can carry it: blobs as a size note, non-finite floats as text."""
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(bytes(value))} bytes>"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, int | float | str):
        return value
    return str(value)


def _sample(value: Any, width: int = 40) -> str:
    text = repr(json_value(value)) if isinstance(value, str) else str(json_value(value))
    return text if len(text) <= width else text[: width - 1] + "…"


def render_table(name: str, columns: list[tuple[str, str, bool]], foreign: list[str]) -> str:
    """``CREATE TABLE`` from (column, type, is_primary_key) and FOREIGN KEY clauses."""
    keys = [c for c, _t, pk in columns if pk]
    lines = [f"  {_quote(c)} {t}".rstrip() for c, t, _pk in columns]
    if keys:
        lines.append(f"  PRIMARY KEY ({', '.join(_quote(k) for k in keys)})")
    lines += [f"  {f}" for f in foreign]
    return f"CREATE TABLE {_quote(name)} (\n" + ",\n".join(lines) + "\n);"


def _quote(name: str) -> str:
    return name if name.replace("_", "").isalnum() and not name[:1].isdigit() else f'"{name}"'


# SQLite ------------------------------------------------------------------------------------

# What the authorizer lets a query do: read, call functions, recurse in a CTE, select.
_ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION}
_ALLOWED_ACTIONS |= {getattr(sqlite3, "SQLITE_RECURSIVE", 33)}


def _authorize(action: int, arg1: str | None, *_rest: Any) -> int:
    if action in _ALLOWED_ACTIONS:
        if action == sqlite3.SQLITE_FUNCTION and (arg1 or "").lower() == "load_extension":
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


class SqliteDatabase:
    """A SQLite file, opened read-only for every query (a connection per call: thread-safe).

    Args:
        path: the ``.sqlite`` file; it must exist (read-only mode never creates one).
    """

    dialect = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DatabaseUnavailable(f"SQLite database {self.path.name!r} does not exist")
        self.name = self.path.name
        self._schema: dict[int, str] = {}

    def _connect(self) -> sqlite3.Connection:
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")  # ours, before the authorizer forbids pragmas
        conn.text_factory = lambda b: b.decode("utf-8", errors="replace")
        return conn

    def schema(self, sample_values: int = 3) -> str:
        """CREATE statements with ``sample_values`` distinct values per column (cached).

        Raises:
            SqlError: the file cannot be read (removed, not a database).
        """
        if sample_values not in self._schema:
            try:
                with _closing(self._connect()) as conn:
                    self._schema[sample_values] = self._read_schema(conn, sample_values)
            except sqlite3.Error as exc:
                raise SqlError(f"cannot read the database: {exc}") from None
        return self._schema[sample_values]

    def _read_schema(self, conn: sqlite3.Connection, sample_values: int) -> str:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
            )
        ]
        parts = []
        for table in tables:
            info = conn.execute(f"PRAGMA table_info({_ident(table)})").fetchall()
            columns = [(r[1], r[2] or "", bool(r[5])) for r in info]
            foreign = [
                f"FOREIGN KEY ({_quote(r[3])}) REFERENCES {_quote(r[2])}"
                + (f"({_quote(r[4])})" if r[4] else "")
                for r in conn.execute(f"PRAGMA foreign_key_list({_ident(table)})")
            ]
            text = render_table(table, columns, foreign)
            if sample_values:
                samples = []
                for column, _type, _pk in columns:
                    values = conn.execute(
                        f"SELECT DISTINCT {_ident(column)} FROM {_ident(table)} "
                        f"WHERE {_ident(column)} IS NOT NULL LIMIT {int(sample_values)}"
                    ).fetchall()
                    if values:
                        samples.append(f"{column}: {', '.join(_sample(v[0]) for v in values)}")
                if samples:
                    text += "\n/* sample values\n" + "\n".join(samples) + "\n*/"
            parts.append(text)
        return "\n\n".join(parts)

    def run(self, sql: str, *, timeout: float, max_rows: int) -> Rows:
        """Run one guarded SELECT.

        Raises:
            UnsafeSql: not exactly one read-only SELECT.
            SqlError: the database refused or failed it, or it ran past ``timeout`` seconds.
        """
        statement = check_select(sql, self.dialect)
        started = time.perf_counter()
        deadline = time.monotonic() + timeout
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            raise SqlError(f"cannot open the database: {exc}") from None
        conn.set_authorizer(_authorize)
        # Called every 10k virtual-machine steps; a true return aborts the query.
        conn.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
        try:
            cursor = conn.execute(statement)
            fetched = cursor.fetchmany(max_rows + 1)
            columns = [d[0] for d in cursor.description or []]
        except sqlite3.OperationalError as exc:
            if time.monotonic() > deadline or "interrupted" in str(exc):
                raise SqlError(f"the query ran longer than the limit of {timeout:g} s") from None
            raise SqlError(str(exc)) from None
        except (sqlite3.DatabaseError, sqlite3.Warning, sqlite3.ProgrammingError) as exc:
            raise SqlError(str(exc)) from None
        finally:
            conn.close()
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        return Rows(columns, fetched[:max_rows], len(fetched) > max_rows, elapsed)

    def close(self) -> None:
        pass


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _closing:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


# SQLAlchemy --------------------------------------------------------------------------------


class SqlAlchemyDatabase:
    """Any database SQLAlchemy reaches (PostgreSQL, MySQL, ...); needs ``sqlalchemy`` and the
    dialect's driver installed.

    Each query runs in a transaction that is rolled back, ``SET TRANSACTION READ ONLY`` first
    where the dialect has it; the time limit is enforced by the server on PostgreSQL
    (``statement_timeout``) and otherwise by the driver's own timeouts only.
    """

    def __init__(self, url: str) -> None:
        try:
            import sqlalchemy
        except ImportError:
            raise DatabaseUnavailable(
                "a database URL other than SQLite needs SQLAlchemy: pip install sqlalchemy"
            ) from None
        try:
            self._engine = sqlalchemy.create_engine(url, pool_pre_ping=True)
        except Exception as exc:  # bad URL or missing driver: one clear line
            raise DatabaseUnavailable(f"cannot open the database URL: {exc}") from None
        self._sa = sqlalchemy
        self.dialect = self._engine.dialect.name
        self.name = self._engine.url.render_as_string(hide_password=True)
        self._schema: dict[int, str] = {}

    def schema(self, sample_values: int = 3) -> str:
        if sample_values not in self._schema:
            try:
                self._schema[sample_values] = self._read_schema(sample_values)
            except self._sa.exc.SQLAlchemyError as exc:
                raise SqlError(f"cannot read the database: {exc}".splitlines()[0]) from None
        return self._schema[sample_values]

    def _read_schema(self, sample_values: int) -> str:
        inspector = self._sa.inspect(self._engine)
        parts = []
        with self._engine.connect() as conn:
            for table in inspector.get_table_names():
                keys = set(inspector.get_pk_constraint(table).get("constrained_columns") or [])
                columns = [
                    (c["name"], str(c["type"]), c["name"] in keys)
                    for c in inspector.get_columns(table)
                ]
                foreign = [
                    f"FOREIGN KEY ({', '.join(f['constrained_columns'])}) REFERENCES "
                    f"{f['referred_table']}({', '.join(f['referred_columns'])})"
                    for f in inspector.get_foreign_keys(table)
                ]
                text = render_table(table, columns, foreign)
                if sample_values:
                    samples = []
                    t = self._sa.table(table, *(self._sa.column(c) for c, _, _ in columns))
                    for column, _type, _pk in columns:
                        col = t.c[column]
                        query = (
                            self._sa.select(col)
                            .where(col.is_not(None))
                            .distinct()
                            .limit(sample_values)
                        )
                        values = [r[0] for r in conn.execute(query)]
                        if values:
                            samples.append(f"{column}: {', '.join(_sample(v) for v in values)}")
                    if samples:
                        text += "\n/* sample values\n" + "\n".join(samples) + "\n*/"
                parts.append(text)
            conn.rollback()
        return "\n\n".join(parts)

    def run(self, sql: str, *, timeout: float, max_rows: int) -> Rows:
        statement = check_select(sql, self.dialect)
        started = time.perf_counter()
        sa = self._sa
        try:
            conn = self._engine.connect()
        except sa.exc.SQLAlchemyError as exc:
            raise SqlError(f"cannot open the database: {exc}".splitlines()[0]) from None
        with conn:
            try:
                if self.dialect in ("postgresql", "mysql", "mariadb", "oracle"):
                    conn.execute(sa.text("SET TRANSACTION READ ONLY"))
                if self.dialect == "postgresql":
                    conn.execute(sa.text(f"SET LOCAL statement_timeout = {int(timeout * 1000)}"))
                result = conn.execute(sa.text(statement))
                fetched = result.fetchmany(max_rows + 1)
                columns = list(result.keys())
            except sa.exc.SQLAlchemyError as exc:
                raise SqlError(str(getattr(exc, "orig", None) or exc).splitlines()[0]) from None
            finally:
                conn.rollback()
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        rows = [tuple(r) for r in fetched[:max_rows]]
        return Rows(columns, rows, len(fetched) > max_rows, elapsed)

    def close(self) -> None:
        self._engine.dispose()


def open_database(target: str) -> Database:
    """A SQLite file path (or ``sqlite:///path``), else a SQLAlchemy URL.

    Raises:
        DatabaseUnavailable: the file does not exist, or the URL cannot be used.
    """
    if target.startswith("sqlite:///"):
        return SqliteDatabase(target.removeprefix("sqlite:///"))
    if "://" in target:
        return SqlAlchemyDatabase(target)
    return SqliteDatabase(target)
