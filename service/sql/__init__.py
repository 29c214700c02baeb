"""SQL as a tool: sql routes answer from a database with one guarded, read-only SELECT.

``guard`` (exactly one SELECT), ``database`` (SQLite or SQLAlchemy, read-only, limits, the
schema prompt), ``fewshot`` (question → SQL examples by similarity) and ``tool`` (write, run,
correct, answer). See docs/sql.md.

Example::

    from service.sql import SqlTool, open_database
    tool = SqlTool(open_database("shop.sqlite"), llm, settings)
    tool.answer("How many orders shipped in May?").sql.query
"""

from .database import Database, DatabaseUnavailable, Rows, SqlError, open_database
from .fewshot import FewShotStore, SqlPair
from .guard import UnsafeSql, check_select, extract_sql
from .tool import SqlCitation, SqlOptions, SqlResult, SqlTool, SqlTrace

__all__ = [
    "Database",
    "DatabaseUnavailable",
    "FewShotStore",
    "Rows",
    "SqlCitation",
    "SqlError",
    "SqlOptions",
    "SqlPair",
    "SqlResult",
    "SqlTool",
    "SqlTrace",
    "UnsafeSql",
    "check_select",
    "extract_sql",
    "open_database",
]
