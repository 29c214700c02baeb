"""Sentence splitting with character offsets (sentencex), safe to call from many threads.

The one sentence splitter of grounded: the chunker cuts on its boundaries (and stores them with
each chunk), and extractive answers, attribution and eval's hallucination detector split with it,
so they all agree on what a sentence is.

Lines are read as markdown-like blocks first: a paragraph's hard-wrapped lines (prose wrapped at 80
or 100 columns, a PDF's layout lines) are one run of text in which sentencex finds the sentences,
while list items (with their indented continuation lines), block quotes (with their next ">"
lines), table rows, headings, fenced or indented code lines and fence lines each start a unit of
their own, and a blank line ends one. A line that stands alone (heading, table row, code) is one
sentence. As in markdown, a paragraph indented after a blank line inside a list is prose of its
item, not code (code there is indented 8 columns). Until 2026-11-27 every line break ended a
sentence, which cut wrapped prose into line-long fragments, and those were what an extractive
answer quoted.

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
from collections.abc import Iterator
from dataclasses import dataclass

import sentencex

SPLITTER = "sentencex"  # named in the chunker's signature: another splitter cuts other chunks
LANGUAGE = "en"  # sentencex's abbreviation lists and terminators; other scripts' stops still split
_LINES = re.compile(r"[^\n\r]*\S[^\n\r]*")
_LIST_ITEM = re.compile(r"[ \t]*(?:[-*+•][ \t]|\d{1,3}[.)][ \t])")
# A line that starts a block: a list item, heading, quote, table row or code fence.
_BLOCK_START = re.compile(rf"{_LIST_ITEM.pattern}|[ \t]*(?:#{{1,6}}[ \t]|>|\||```|~~~)")
_FENCE = re.compile(r"[ \t]*(?:```|~~~)")
_STANDALONE = re.compile(r"[ \t]*(?:#{1,6}[ \t]|\|)")  # a heading or table row: never continued
_QUOTE = re.compile(r"[ \t]*>")
# A quote's ">" markers after its first line: read as spaces, so a quoted sentence reads whole.
_QUOTE_MARKER = re.compile(r"(?<=[\n\r])[ \t]*>")


@dataclass(frozen=True)
class SentenceSpan:
    """A sentence of ``text``: ``sent == text[start:end]``, trailing whitespace included."""

    sent: str
    start: int
    end: int


def _units(text: str) -> Iterator[tuple[int, int, bool]]:
    """``(start, end, alone)`` of each unit of ``text`` (module doc): a paragraph, list item or
    block quote with its wrapped lines, whose sentences sentencex finds, or a line that stands
    alone (a heading, table row, code or fence line: one sentence, never split)."""
    start = end = -1  # the open unit, which the next line may continue
    quote = False  # the open unit is a block quote: its next ">" line continues it
    # Since the last list item only list content was seen: an indented paragraph after a blank
    # line belongs to the item (markdown), and code there is indented 8 columns, not 4.
    in_list = False
    fenced = False
    previous_end = 0
    for match in _LINES.finditer(text):
        line, lo, hi = match.group(), match.start(), match.end()
        # a blank line in between: two line breaks, whichever convention ("\n", "\r\n", "\r")
        blank_before = len(text[previous_end:lo].splitlines()) > 1
        previous_end = hi
        fence = _FENCE.match(line) is not None
        quoted = _QUOTE.match(line) is not None
        # (a unit is never open inside a fence: fenced lines stand alone)
        continues = (quote and quoted) or not _BLOCK_START.match(line)
        if start >= 0 and not blank_before and continues:
            end = hi  # a wrapped line of the open paragraph, list item or quote
            continue
        indent = _indent(line)
        if fenced or fence or _STANDALONE.match(line):
            alone = True
        else:
            # after a blank line or a line that stands alone, an indented line is code
            alone = (start < 0 or blank_before) and indent >= (8 if in_list else 4)
        if not fenced:
            in_list = _LIST_ITEM.match(line) is not None or (in_list and indent > 0)
        if start >= 0:
            yield start, end, False
        if alone:
            yield lo, hi, True
            start = end = -1
        else:
            start, end, quote = lo, hi, quoted
        fenced ^= fence
    if start >= 0:
        yield start, end, False


def _indent(line: str) -> int:
    """Columns of leading whitespace, a tab counting to the next multiple of 4 (markdown)."""
    expanded = line.expandtabs(4)
    return len(expanded) - len(expanded.lstrip())


def _unit_starts(unit: str) -> list[int]:
    """Where the sentences of one unit start (each at its first non-space character); its line
    breaks read as spaces, so a wrapped sentence stays one."""
    starts: list[int] = []
    # The same length as the unit, so offsets still hold.
    flat = _QUOTE_MARKER.sub(lambda m: " " * len(m.group()), unit)
    flat = flat.replace("\r", " ").replace("\n", " ")
    # A list item's marker ("1. ", "- ") is not a sentence of its own.
    marker = _BLOCK_START.match(unit)
    after_marker = marker.end() if marker else 0
    for found in sentencex.get_sentence_boundaries(LANGUAGE, flat):
        sent: str = found["text"]
        at = found["start_index"] + len(sent) - len(sent.lstrip())
        if sent.strip() and (not starts or at > after_marker):
            starts.append(at)
    return starts


def _starts(text: str) -> list[int]:
    """Where each sentence of ``text`` starts (its first non-space character), in order."""
    starts: list[int] = []
    for lo, hi, alone in _units(text):
        unit = text[lo:hi]
        if alone:
            starts.append(lo + len(unit) - len(unit.lstrip()))
        else:
            starts.extend(lo + s for s in _unit_starts(unit))
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
