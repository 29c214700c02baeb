"""Chunk hits -> document scores, the step between the service's chunk search and BEIR's
document qrels.

The product returns chunks, so this is an eval choice, not a serving setting: it decides how a
document ranking is read off a chunk ranking. ``max`` (best chunk, "MaxP" in Dai & Callan 2019)
is what :func:`service.retrieval.doc_ranking` does. ``max+W`` adds ``W`` times the document's
second-best chunk: a second matching window is corroborating evidence, but only the second one
counts and with a small weight, because neighbouring windows overlap (the same sentences would be
counted again) and summing every chunk ("SumP") ranks long documents up for being long. The
score stays within ``(1 + W)`` of the best chunk, so it reorders only documents whose best chunks
are close. ``sum`` is SumP, kept as the reference that shows the length bias.

Example::

    aggregate([("d1", 0.5), ("d1", 0.2), ("d2", 0.6)], "max+0.5")   # {"d1": 0.6, "d2": 0.6}
"""

from __future__ import annotations

import re
from collections.abc import Iterable

DEFAULT_AGGREGATION = "max"
_MAX_PLUS = re.compile(r"max\+(\d+(?:\.\d+)?)")


def check_aggregation(method: str) -> str:
    """``method`` when it is ``max``, ``sum`` or ``max+W`` (0 ≤ W ≤ 1); ValueError otherwise."""
    if method in ("max", "sum"):
        return method
    found = _MAX_PLUS.fullmatch(method)
    if found and float(found.group(1)) <= 1:
        return method
    raise ValueError(f"unknown aggregation {method!r}: use max, sum or max+W with 0 <= W <= 1")


def aggregate(
    hits: Iterable[tuple[str, float]], method: str = DEFAULT_AGGREGATION
) -> dict[str, float]:
    """``{doc_id: score}`` from ``(doc_id, chunk score)`` hits, by ``method`` (module doc)."""
    check_aggregation(method)
    per_doc: dict[str, list[float]] = {}
    for doc_id, score in hits:
        per_doc.setdefault(doc_id, []).append(score)
    if method == "sum":
        return {d: sum(s) for d, s in per_doc.items()}
    weight = 0.0 if method == "max" else float(method.split("+", 1)[1])
    out: dict[str, float] = {}
    for doc_id, scores in per_doc.items():
        best, second = _top_two(scores)
        out[doc_id] = best + weight * second if weight else best
    return out


def _top_two(scores: list[float]) -> tuple[float, float]:
    ordered = sorted(scores, reverse=True)
    return ordered[0], ordered[1] if len(ordered) > 1 else 0.0
