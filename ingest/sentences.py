"""Sentence splitting with character offsets (pysbd), safe to call from many threads.

The one sentence splitter of grounded: the chunker cuts on its boundaries (and stores them with
each chunk), and extractive answers, attribution and eval's hallucination detector split with it,
so they all agree on what a sentence is. A line break always ends a sentence: list items, table
rows and code lines are units of their own.

pysbd decides where sentences end; the character offsets are found here, in one pass, because
``Segmenter(char_span=True)`` searches the whole text once per sentence (quadratic) and can match
a repeated sentence at an earlier occurrence. pysbd itself slows down more than linearly on long
input, so a long line is split one window of :data:`MAX_PIECE` characters at a time.

A ``pysbd.Segmenter`` keeps the text it is splitting on the instance, so one segmenter shared by
concurrent requests could mix them up. Each thread gets its own.

Example::

    for span in sentence_spans("One. Two."):
        span.sent, span.start   # "One. ", 0
    sentences("One. Two.")      # ["One. ", "Two."]
    sentence_bounds("One. Two.")  # [(0, 4), (5, 9)]
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

_local = threading.local()
_LINES = re.compile(r"[^\n\r]*\S[^\n\r]*")
MAX_PIECE = 2_000  # pysbd's throughput falls by a third from 1,000 to 4,000 characters


@dataclass(frozen=True)
class SentenceSpan:
    """A sentence of ``text``: ``sent == text[start:end]``, trailing whitespace included."""

    sent: str
    start: int
    end: int


def _segmenter() -> Any:
    segmenter = getattr(_local, "segmenter", None)
    if segmenter is None:
        import pysbd

        segmenter = _local.segmenter = pysbd.Segmenter(language="en", clean=False)
    return segmenter


def _piece_starts(segmenter: Any, piece: str) -> list[int]:
    """Where pysbd's sentences of ``piece`` start, the first always at its first non-space."""
    if not piece.strip():
        return []
    cursor = len(piece) - len(piece.lstrip())
    starts = [cursor]
    for sent in segmenter.processor(piece).process() or []:
        sent = sent.strip()
        # pysbd returns substrings of its input in order; one it rewrote (rare) is not found
        # and joins the sentence before it.
        at = piece.find(sent, cursor) if sent else -1
        if at < 0:
            continue
        if at > starts[-1]:
            starts.append(at)
        cursor = at + len(sent)
    return starts


def _line_starts(segmenter: Any, line: str) -> list[int]:
    """Sentence starts of one line, split :data:`MAX_PIECE` characters at a time: each window's
    last sentence may be cut off by the window, so the next window starts with it."""
    starts: list[int] = []
    at = len(line) - len(line.lstrip())
    inside = False  # ``at`` is inside a sentence longer than a window, not at a start
    while len(line) - at > MAX_PIECE:
        window = line[at : at + MAX_PIECE]
        found = _piece_starts(segmenter, window)
        if len(found) > 1:
            starts.extend(at + s for s in found[int(inside) : -1])
            at += found[-1]
            inside = False
            continue
        # One sentence longer than the window: go on after its last space in the window.
        if not inside:
            starts.append(at)
        space = max(window.rfind(" "), window.rfind("\t"))
        at += space + 1 if space > 0 else MAX_PIECE
        at += len(line[at:]) - len(line[at:].lstrip())
        inside = True
    starts.extend(at + s for s in _piece_starts(segmenter, line[at:])[int(inside) :])
    return starts


def _starts(text: str) -> list[int]:
    """Where each sentence of ``text`` starts (its first non-space character), in order; every
    line starts a sentence."""
    segmenter = _segmenter()
    starts: list[int] = []
    for line in _LINES.finditer(text):
        starts.extend(line.start() + s for s in _line_starts(segmenter, line.group()))
    return starts


def sentence_spans(text: str) -> list[SentenceSpan]:
    """The sentences of ``text``, each up to where the next begins (trailing whitespace and line
    breaks included). Leading whitespace of ``text`` belongs to no sentence."""
    starts = _starts(text)
    ends = [*starts[1:], len(text)] if starts else []
    return [SentenceSpan(text[s:e], s, e) for s, e in zip(starts, ends, strict=True)]


def sentences(text: str) -> list[str]:
    """The sentences of ``text`` (nothing cleaned), trailing whitespace included."""
    return [span.sent for span in sentence_spans(text)]


def sentence_bounds(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each sentence of ``text`` without surrounding whitespace: what the
    chunker cuts on and what an extractive answer quotes."""
    bounds = []
    for span in sentence_spans(text):
        trimmed = span.sent.rstrip()
        bounds.append((span.start, span.start + len(trimmed)))
    return bounds
