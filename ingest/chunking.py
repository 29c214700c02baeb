"""Token-window chunking with the embedder's own tokenizer.

A document is split into sections at markdown headings (HTML headings arrive as ``#`` lines too);
each section is cut into windows of at most ``chunk_size`` tokens *including* the context the chunk
is embedded with (title and heading path), overlapping by ``chunk_overlap`` tokens. Windows end at
a sentence or line break when one lies in the last quarter of the window. Character offsets point
back into the document text, so ``doc.text[chunk.start:chunk.end] == chunk.text``.

Example::

    chunker = TokenChunker(embedder.tokenizer, chunk_size=256, chunk_overlap=32)
    chunks = chunker.chunk(Document("a", "# Intro\\nSome text."))
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .documents import Chunk, Document, chunk_context

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
    """Chunks of at most ``chunk_size`` tokens of the given (Hugging Face fast) tokenizer.

    Args:
        tokenizer: the embedder's tokenizer; it must return offset mappings.
        chunk_size: max tokens per chunk, context and special tokens included.
        chunk_overlap: tokens shared by consecutive chunks of a section.
    """

    def __init__(self, tokenizer: Any, chunk_size: int = 256, chunk_overlap: int = 32) -> None:
        if chunk_size < 16:
            raise ValueError("chunk_size must be >= 16")
        if not 0 <= chunk_overlap < chunk_size // 2:
            raise ValueError("chunk_overlap must be >= 0 and < chunk_size/2")
        self.tokenizer = tokenizer
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        # [CLS] and [SEP] (or their equivalents) take room in the model's window.
        self._special = len(tokenizer("", add_special_tokens=True)["input_ids"])
        self.signature = f"tokens:{chunk_size}:{chunk_overlap}"

    def _body_budget(self, title: str, headings: tuple[str, ...]) -> int:
        context = chunk_context(title, headings)
        if not context:
            return self.chunk_size - self._special
        context_tokens = len(self.tokenizer(context, add_special_tokens=False)["input_ids"])
        return self.chunk_size - self._special - context_tokens - 1  # 1 for the newline

    def chunk(self, doc: Document) -> list[Chunk]:
        sections = split_sections(doc.text) or [Section(0, len(doc.text), ())]
        encodings = self.tokenizer(
            [doc.text[s.start : s.end] for s in sections],
            add_special_tokens=False,
            return_offsets_mapping=True,
            verbose=False,  # long sections are expected: we window them ourselves
        )["offset_mapping"]
        chunks: list[Chunk] = []
        for section, offsets in zip(sections, encodings, strict=True):
            if not offsets:
                continue
            headings = section.headings
            budget = self._body_budget(doc.title, headings)
            if budget < _MIN_BODY_TOKENS:
                # Context too long to leave room for text: keep only the innermost heading.
                headings = headings[-1:]
                budget = max(_MIN_BODY_TOKENS, self._body_budget(doc.title, headings))
            for lo, hi in self._windows(doc.text, section.start, offsets, budget):
                start, end = section.start + offsets[lo][0], section.start + offsets[hi - 1][1]
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
                    )
                )
        return chunks

    def _windows(
        self, text: str, base: int, offsets: Sequence[tuple[int, int]], budget: int
    ) -> list[tuple[int, int]]:
        """Token index ranges [lo, hi) covering all tokens, each <= budget long."""
        overlap = min(self.chunk_overlap, budget // 4)
        n = len(offsets)
        windows: list[tuple[int, int]] = []
        lo = 0
        while lo < n:
            hi = min(lo + budget, n)
            if hi < n:
                hi = self._sentence_break(text, base, offsets, lo, hi, budget)
            windows.append((lo, hi))
            if hi >= n:
                break
            lo = max(hi - overlap, lo + 1)
        return windows

    @staticmethod
    def _sentence_break(
        text: str, base: int, offsets: Sequence[tuple[int, int]], lo: int, hi: int, budget: int
    ) -> int:
        """Move ``hi`` back to after a sentence end or line break in the last quarter."""
        floor = lo + max(1, (budget * 3) // 4)
        for i in range(hi, floor, -1):
            end = base + offsets[i - 1][1]
            following = text[end : end + 1]
            if text[end - 1 : end] in ".!?;:" and (not following or following.isspace()):
                return i
            if following == "\n":
                return i
        return hi
