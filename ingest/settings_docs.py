"""Renders the settings tables of docs/configuration.md from ``Settings`` and ``Route``.

``python -m ingest.settings_docs`` rewrites the region between the markers below;
``--check`` only reports (exit 1) when the page is out of date. The prose outside the markers is
hand-written and left alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .settings import OPENAI_FALLBACKS, Route, Settings

START = "<!-- settings:start -->"
END = "<!-- settings:end -->"
DOCS_PATH = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
REGENERATE = "python -m ingest.settings_docs"

_KIB = 1024
_MIB = 1024 * 1024


def _is_secret(field: FieldInfo) -> bool:
    annotation = field.annotation
    return annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())


def _default(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return None if field.default is PydanticUndefined else field.default


def render_default(name: str, field: FieldInfo) -> str:
    """A default as a reader would write it in the TOML file; secrets are always shown unset."""
    if field.is_required():
        return "required"
    value = _default(field)
    if value is None or _is_secret(field):
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int) and name.endswith("_bytes"):
        for unit, size in (("MiB", _MIB), ("KiB", _KIB)):
            if value >= size and value % size == 0:
                return f"{value // size} {unit}"
        return str(value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, Path):
        return f"`{value.as_posix()}`"
    if isinstance(value, list | tuple):
        return ", ".join(f"`{item}`" for item in value) if value else "none"
    if value == "":
        return "empty"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _env(name: str) -> str:
    prefix = Settings.model_config.get("env_prefix", "")
    env = f"{prefix}{name}".upper()
    fallback = OPENAI_FALLBACKS.get(name)
    return f"{env} or {fallback}" if fallback else env


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _description(model: type[BaseModel], name: str, field: FieldInfo) -> str:
    if not field.description:
        raise ValueError(f"{model.__name__}.{name} has no description")
    return field.description


def render_settings() -> str:
    """The generated region, markers excluded."""
    settings = [
        (name, _env(name), render_default(name, f), _description(Settings, name, f))
        for name, f in Settings.model_fields.items()
    ]
    routes = [
        (name, render_default(name, f), _description(Route, name, f))
        for name, f in Route.model_fields.items()
    ]
    lines = [
        f"<!-- Generated from ingest/settings.py by `{REGENERATE}`; edit the fields, not this. -->",
        "",
        *_table(("setting", "env", "default", "description"), settings),
        "",
        "Each `[[routes]]` table of the TOML file (see [answers](answers.md#routing)):",
        "",
        *_table(("field", "default", "description"), routes),
        "",
    ]
    return "\n".join(lines)


def render_page(page: str) -> str:
    """``page`` with the region between the markers replaced by the generated tables."""
    start, end = page.find(START), page.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the page needs {START} ... {END} around the settings tables")
    return page[: start + len(START)] + "\n" + render_settings() + "\n" + page[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest.settings_docs", description=__doc__)
    parser.add_argument("path", nargs="?", type=Path, default=DOCS_PATH)
    parser.add_argument("--check", action="store_true", help="exit 1 when the page is stale")
    args = parser.parse_args(argv)
    page = args.path.read_text(encoding="utf-8")
    rendered = render_page(page)
    if rendered == page:
        return 0
    if args.check:
        print(f"{args.path} is out of date: run `{REGENERATE}`", file=sys.stderr)
        return 1
    args.path.write_text(rendered, encoding="utf-8")
    print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
