"""Sentence-window chunking, budgeted in the embedder's own tokens.

A document is split into sections at markdown headings (HTML headings arrive as ``#`` lines too);
each section into sentences (:mod:`ingest.sentences`; a paragraph's wrapped lines are read as one
text, list items, table rows, headings and code lines are units of their own). Consecutive sentences
are packed into chunks of at most ``chunk_size`` tokens *including* the context the chunk is
embedded with (title and heading path), so every chunk starts at a sentence start and ends at a
sentence end. Neighbouring chunks share whole sentences: as many of the previous chunk's last
sentences as fit in ``chunk_overlap`` tokens (none when the first one does not). A single sentence
longer than the budget is the only thing cut mid-way, into token windows that overlap by
``chunk_overlap`` tokens. Character offsets point back into the document text, so
``doc.text[chunk.start:chunk.end] == chunk.text``, and each chunk keeps where its sentences start
(``Chunk.sentences``) for extractive answers.

Example::

    chunker = TokenChunker(embedder.tokenizer, chunk_size=256, chunk_overlap=64)
    chunks = chunker.chunk(Document("a", "# Intro\\nSome text."))
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .documents import Chunk, Document, chunk_context
from .sentences import SPLITTER, sentence_bounds

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
_MIN_BODY_TOKENS = 16


class Chunker(Protocol):
    signature: str

    def chunk(self, doc: Document) -> list[Chunk]: ...


@dataclass(frozen=True)
class Section:
    start: int
    end: int
    headings: tuple[str, ...]


def split_sections(text: str) -> list[Section]:
    """Spans between markdown headings, each with its heading path (h1 > h2 > ...)."""
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    cursor = 0
    current: tuple[str, ...] = ()
    for match in _HEADING.finditer(text):
        if text[cursor : match.start()].strip():
            sections.append(Section(cursor, match.start(), current))
        level = len(match.group(1))
        path = [(lvl, title) for lvl, title in path if lvl < level]
        path.append((level, match.group(2).strip()))
        current = tuple(title for _, title in path)
        cursor = match.end()
    if text[cursor:].strip():
        sections.append(Section(cursor, len(text), current))
    return sections


class TokenChunker:
    """Chunks of whole sentences, at most ``chunk_size`` tokens of the given (Hugging Face fast)
    tokenizer.

    Args:
        tokenizer: the embedder's tokenizer; it must return offset mappings.
        chunk_size: max tokens per chunk, context and special tokens included.
        chunk_overlap: the most tokens that the whole sentences shared by consecutive chunks of
            a section may take.
    """

    def __init__(self, tokenizer: Any, chunk_size: int = 256, chunk_overlap: int = 64) -> None:
        if chunk_size < 16:
            raise ValueError("chunk_size must be >= 16")
        if not 0 <= chunk_overlap < chunk_size // 2:
            raise ValueError("chunk_overlap must be >= 0 and < chunk_size/2")
        self.tokenizer = tokenizer
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        # [CLS] and [SEP] (or their equivalents) take room in the model's window.
        self._special = len(tokenizer("", add_special_tokens=True)["input_ids"])
        # Part of every document's hash and of a new collection's manifest: chunks cut another
        # way (token windows, "tokens:...", or pysbd's sentences, "sentences:...") are re-chunked
        # on the next ingest.
        self.signature = f"{SPLITTER}:{chunk_size}:{chunk_overlap}"

    def _body_budget(self, title: str, headings: tuple[str, ...]) -> int:
        context = chunk_context(title, headings)
        if not context:
            return self.chunk_size - self._special
        context_tokens = len(self.tokenizer(context, add_special_tokens=False)["input_ids"])
        return self.chunk_size - self._special - context_tokens - 1  # 1 for the newline

    def chunk(self, doc: Document) -> list[Chunk]:
        sections = split_sections(doc.text) or [Section(0, len(doc.text), ())]
        texts = [doc.text[s.start : s.end] for s in sections]
        encodings = self.tokenizer(
            texts,
            add_special_tokens=False,
            return_offsets_mapping=True,
            verbose=False,  # long sections are expected: we window them ourselves
        )["offset_mapping"]
        chunks: list[Chunk] = []
        for section, text, offsets in zip(sections, texts, encodings, strict=True):
            if not offsets:
                continue
            headings = section.headings
            budget = self._body_budget(doc.title, headings)
            if budget < _MIN_BODY_TOKENS:
                # Context too long to leave room for text: keep only the innermost heading.
                headings = headings[-1:]
                budget = max(_MIN_BODY_TOKENS, self._body_budget(doc.title, headings))
            for lo, hi, starts in self._windows(text, offsets, budget):
                start, end = section.start + lo, section.start + hi
                chunks.append(
                    Chunk(
                        doc_id=doc.id,
                        chunk_index=len(chunks),
                        text=doc.text[start:end],
                        start=start,
                        end=end,
                        title=doc.title,
                        headings=headings,
                        source=doc.source,
                        metadata=doc.metadata,
                        sentences=tuple(s - lo for s in starts),
                    )
                )
        return chunks

    def _windows(
        self, text: str, offsets: Sequence[tuple[int, int]], budget: int
    ) -> list[tuple[int, int, list[int]]]:
        """``(start, end, sentence starts)`` in ``text`` of each chunk of the section."""
        overlap = min(self.chunk_overlap, budget // 4)
        token_starts = [start for start, _ in offsets]
        units = sentence_bounds(text)
        # Token index range of each sentence: a chunk's tokens are those starting inside it.
        first = [bisect_left(token_starts, lo) for lo, _ in units]
        after = [bisect_left(token_starts, hi) for _, hi in units]

        def tokens(i: int, j: int) -> int:
            """Tokens of sentences i..j (inclusive) and the space between them."""
            return after[j] - first[i]

        windows: list[tuple[int, int, list[int]]] = []
        i, n = 0, len(units)
        while i < n:
            if tokens(i, i) > budget:
                windows.extend(self._cut(text, offsets, first[i], after[i], budget, overlap))
                i += 1
                continue
            j = i
            while j + 1 < n and tokens(i, j + 1) <= budget:
                j += 1
            windows.append((units[i][0], units[j][1], [lo for lo, _ in units[i : j + 1]]))
            if j + 1 == n:
                break
            # Start the next chunk with this one's last whole sentences, as many as fit in the
            # overlap while leaving room for the next new sentence (so each chunk adds one).
            k = j + 1
            while k - 1 > i and tokens(k - 1, j) <= overlap and tokens(k - 1, j + 1) <= budget:
                k -= 1
            i = k
        return windows

    @staticmethod
    def _cut(
        text: str,
        offsets: Sequence[tuple[int, int]],
        lo: int,
        hi: int,
        budget: int,
        overlap: int,
    ) -> list[tuple[int, int, list[int]]]:
        """Token windows over one sentence longer than the budget (tokens ``lo`` to ``hi``),
        each ending at a word break in its last quarter when there is one. The pieces hold no
        whole sentence, so they list none."""

        def begins_word(k: int) -> bool:
            return text[offsets[k][0] - 1 : offsets[k][0]].isspace()

        pieces: list[tuple[int, int, list[int]]] = []
        while lo < hi:
            end = min(lo + budget, hi)
            if end < hi:
                floor = lo + max(1, (budget * 3) // 4)
                end = next((k for k in range(end, floor, -1) if begins_word(k)), end)
            pieces.append((offsets[lo][0], offsets[end - 1][1], []))
            if end >= hi:
                break
            # The overlap, too, starts at a word when one starts inside it.
            back = max(end - overlap, lo + 1)
            lo = next((k for k in range(back, end) if begins_word(k)), back)
        return pieces
