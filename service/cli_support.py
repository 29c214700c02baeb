"""What every ``grounded`` command shares: the consoles, settings from flags, and failing with a
message instead of a traceback."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ingest.settings import Settings

# Piped output (a file, a CI log) is not cut to 80 columns, rich's default off a terminal: a
# table's figures would end in "…".
PIPED_WIDTH = 200
out = Console(width=None if sys.stdout.isatty() else PIPED_WIDTH)
err = Console(stderr=True)

DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (env GROUNDED_DATA_DIR).")
]


def make_settings(**overrides: Any) -> Settings:
    """Settings with the flags that were given (``None`` = not given); exit 2 when invalid."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except (ValueError, FileNotFoundError) as exc:
        err.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from None


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)
