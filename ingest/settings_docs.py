"""Renders the settings tables of docs/configuration.md from ``Settings`` and ``Route``.

One table per concern of :meth:`Settings.concerns`, titled by the concern and introduced by the
first paragraph of its docstring; the ``[[routes]]`` fields follow the routing table.
``python -m ingest.settings_docs`` rewrites the region between the markers below;
``--check`` only reports (exit 1) when the page is out of date. The prose outside the markers is
hand-written and left alone.

Example::

    python -m ingest.settings_docs            # rewrite docs/configuration.md
    python -m ingest.settings_docs --check    # exit 1 when it is stale
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .settings import OPENAI_FALLBACKS, Concern, Route, RoutingSettings, Settings

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


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _description(model: type[BaseModel], name: str, field: FieldInfo) -> str:
    if not field.description:
        raise ValueError(f"{model.__name__}.{name} has no description")
    return field.description


def _summary(concern: type[Concern]) -> str:
    """The first paragraph of the concern's docstring, on one line."""
    doc = concern.__doc__ or ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def _concern(concern: type[Concern]) -> list[str]:
    rows = [
        (name, _env(name), render_default(name, f), _description(concern, name, f))
        for name, f in concern.model_fields.items()
    ]
    # Bold, not a heading: a "### Reranking" here would take the #reranking anchor that
    # README.md and answers.md link to, from the prose section of the same name below.
    lines = [f"**{concern.title}** (`{concern.__name__}`): {_summary(concern)}", ""]
    lines += _table(("setting", "env", "default", "description"), rows)
    if concern is RoutingSettings:
        routes = [
            (name, render_default(name, f), _description(Route, name, f))
            for name, f in Route.model_fields.items()
        ]
        lines += [
            "",
            "Each `[[routes]]` table of the TOML file (see [answers](answers.md#routing)):",
            "",
            *_table(("field", "default", "description"), routes),
        ]
    return [*lines, ""]


def render_settings() -> str:
    """The generated region, markers excluded.

    Raises:
        ValueError: a field without a description, or one that no concern holds.
    """
    concerns = Settings.concerns()
    held = [name for concern in concerns for name in concern.model_fields]
    stray = sorted(set(Settings.model_fields) - set(held))
    if stray:
        raise ValueError(f"Settings fields outside every concern: {stray}")
    lines = [
        f"<!-- Generated from ingest/settings.py by `{REGENERATE}`; edit the fields, not this. -->",
        "",
    ]
    for concern in concerns:
        lines += _concern(concern)
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
