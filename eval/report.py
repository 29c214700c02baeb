"""Self-contained HTML reports: one page, its charts embedded as PNG, its tables escaped.

The ladder report and the nightly report are both built from these pieces, so they look alike
and a report opens anywhere (no files beside it, no network).

Example::

    plt = pyplot()
    fig, ax = plt.subplots()
    ax.bar(["dense", "hybrid"], [0.61, 0.66])
    png = figure_png(fig)
    page(
        "Retrieval ladder",
        f"<h1>Retrieval ladder</h1>{image(png, 'nDCG@10')}"
        + table(["row", "nDCG@10"], [tr([td("dense"), td("0.6100")])]),
    )
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from typing import Any

STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}\n"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
)


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig: Any) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def image(png: bytes, alt: str) -> str:
    """An ``<img>`` carrying the PNG itself as a data URI."""
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def td(text: str) -> str:
    """A ``<td>`` with ``text`` escaped."""
    return f"<td>{html.escape(text)}</td>"


def tr(cells: Iterable[str], css_class: str = "") -> str:
    """A ``<tr>`` of cells already rendered (see :func:`td`)."""
    attribute = f" class={css_class}" if css_class else ""
    return f"<tr{attribute}>{''.join(cells)}</tr>"


def table(header: Sequence[str], rows: Iterable[str]) -> str:
    """A table: ``header`` as escaped ``<th>`` cells, then ``rows`` (see :func:`tr`)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def page(title: str, body: str, style: str = "") -> str:
    """A whole HTML document: ``title`` (escaped), the shared style plus ``style``, ``body``."""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}{style}</style></head>
<body>{body}
</body></html>
"""
