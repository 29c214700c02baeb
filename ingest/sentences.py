"""Sentence splitting with character offsets (sentencex), safe to call from many threads.

The one sentence splitter of grounded: the chunker cuts on its boundaries (and stores them with
each chunk), and extractive answers, attribution and eval's hallucination detector split with it,
so they all agree on what a sentence is. A line break always ends a sentence: list items, table
rows and code lines are units of their own.

sentencex (Wikimedia's rule-based segmenter, written in Rust) decides where sentences end and
gives their character offsets. It would rather leave two sentences together than cut one, which
suits quoting whole sentences. It replaced pysbd, which agreed with it on 99% of boundaries but
split ~200 KB/s against ~40 MB/s and was 84% of the chunker's time (``bench/chunking.py``;
README, "Ingest speed").

Example::

    for span in sentence_spans("One. Two."):
        span.sent, span.start   # "One. ", 0
    sentences("One. Two.")      # ["One. ", "Two."]
    sentence_bounds("One. Two.")  # [(0, 4), (5, 9)]
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sentencex

SPLITTER = "sentencex"  # named in the chunker's signature: another splitter cuts other chunks
LANGUAGE = "en"  # sentencex's abbreviation lists and terminators; other scripts' stops still split
_LINES = re.compile(r"[^\n\r]*\S[^\n\r]*")


@dataclass(frozen=True)
class SentenceSpan:
    """A sentence of ``text``: ``sent == text[start:end]``, trailing whitespace included."""

    sent: str
    start: int
    end: int


def _line_starts(line: str) -> list[int]:
    """Where the sentences of one line start (each at its first non-space character)."""
    starts = []
    for found in sentencex.get_sentence_boundaries(LANGUAGE, line):
        sent: str = found["text"]
        if sent.strip():
            starts.append(found["start_index"] + len(sent) - len(sent.lstrip()))
    return starts


def _starts(text: str) -> list[int]:
    """Where each sentence of ``text`` starts (its first non-space character), in order; every
    line starts a sentence."""
    starts: list[int] = []
    for line in _LINES.finditer(text):
        starts.extend(line.start() + s for s in _line_starts(line.group()))
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
