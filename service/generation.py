"""Answer generation. The extractive generator needs no LLM: it quotes the retrieved text.

It quotes whole sentences of the top chunks: ingest stores where each chunk's sentences start
(:mod:`ingest.payload`), so nothing is split at query time; chunks written before that are split
with :mod:`ingest.sentences`, dropping a first or last piece that looks cut off. A sentence that
overlapping chunks share (same document and offset) or that repeats another's text is a
candidate once. Embedding the candidates dominates the cost (about 0.2 ms per token on a 2-core
CPU, so the ~45 sentences of five chunks take 0.3-0.5 s), so when their text exceeds
``candidate_tokens`` the candidates are first ranked by the query terms they contain (BM25's
tokenizer, each term weighted by its rarity among the candidates) and only the best that fit the
budget are embedded. The embedded ones are scored by cosine similarity to the query embedding;
the best few are written in document order, each followed by a ``[n]`` citation that points at
the n-th retrieved chunk. Bracketed numbers inside the quoted text (``[3]``, ``[1, 2]``, a
document forging citations) are rewritten as ``(3)``, ``(1, 2)`` first, so every ``[n]`` in the
answer is one grounded wrote and resolves to ``answer.citations``. An LLM generator
(:mod:`service.llm_generation`) and the LLM-with-fallback (:mod:`service.fallback`) plug into
the same :class:`Generator` slot.

Example::

    answer = ExtractiveGenerator(embedder).generate("what is BM25?", result)
    print(answer.text)   # "BM25 is a ranking function ... [1]"
    for item in ExtractiveGenerator(embedder).stream("what is BM25?", result):
        ...              # the text, then the Answer
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ingest.embedding import Embedder
from ingest.sentences import sentence_bounds
from ingest.sparse import Bm25Encoder

from .citations import neutralise_markers
from .retrieval import RetrievalResult, RetrievedChunk


@dataclass(frozen=True)
class Citation:
    number: int
    chunk_id: str
    doc_id: str
    title: str
    source: str
    start: int
    end: int

    @classmethod
    def of(cls, number: int, chunk: RetrievedChunk) -> Citation:
        return cls(
            number, chunk.id, chunk.doc_id, chunk.title, chunk.source, chunk.start, chunk.end
        )


@dataclass
class Answer:
    """An answer and everything needed to check it.

    ``citations[i].number`` is the ``[n]`` in ``text``; ``context`` holds the chunks the
    generator was given (for the LLM, block ``[n]`` is ``context[n - 1]``).
    """

    text: str
    generator: str
    citations: list[Citation] = field(default_factory=list)
    abstained: bool = False
    context: list[RetrievedChunk] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    dropped_citations: list[int] = field(default_factory=list)
    model: str | None = None
    citations_attributed: bool = False  # added by grounded's attribution, not by the model
    degraded: bool = False
    degraded_reason: str | None = None


@dataclass
class StreamReset:
    """Streaming only: the generator failed after sending text; discard it, the fallback follows."""

    reason: str


class Generator(Protocol):
    """Writes an :class:`Answer` from the retrieved chunks, whole or streamed.

    ``stream`` yields text deltas, a :class:`StreamReset` when text already sent is void, and
    ends with the :class:`Answer` (its ``text`` is authoritative).
    """

    name: str

    def generate(
        self,
        query: str,
        retrieval: RetrievalResult,
        *,
        history: Sequence[dict[str, str]] = (),
        instructions: str | None = None,
    ) -> Answer: ...

    def stream(
        self,
        query: str,
        retrieval: RetrievalResult,
        *,
        history: Sequence[dict[str, str]] = (),
        instructions: str | None = None,
    ) -> Iterator[str | StreamReset | Answer]: ...


@dataclass(frozen=True)
class _Sentence:
    chunk: RetrievedChunk
    text: str
    offset: int  # character offset inside the chunk


# How a sentence may begin or end when a chunk without stored sentences is split at query time:
# such chunks began and ended inside sentences, and a piece that does not look whole is dropped.
_WHOLE_START = "\"'“‘([#>*|`-"  # besides a capital letter: quotes, brackets, markdown
_WHOLE_END = ".!?…:;\"'”’)]|`"
_WORDS = re.compile(r"\w+")
# A line break inside a sentence, with the ">" markers of a block quote's next line.
_LINE_BREAKS = re.compile(r"[ \t]*[\r\n]+[ \t]*(?:>[ \t]*)*")


def chunk_sentences(chunk: RetrievedChunk) -> list[tuple[int, int]]:
    """``(start, end)`` in ``chunk.text`` of each whole sentence, without surrounding space."""
    text = chunk.text
    if chunk.sentences is not None:
        if not chunk.sentences:  # a piece of a sentence too long for one chunk
            return []
        ends = [*chunk.sentences[1:], len(text)]
        pairs = zip(chunk.sentences, ends, strict=True)
        return [(lo, lo + len(text[lo:hi].rstrip())) for lo, hi in pairs if text[lo:hi].strip()]
    spans = sentence_bounds(text)
    if spans and chunk.start > 0:
        first = text[spans[0][0]]
        if not (first.isupper() or first in _WHOLE_START):
            spans = spans[1:]
    if spans and text[spans[-1][1] - 1] not in _WHOLE_END:
        spans = spans[:-1]
    return spans


def _one_line(text: str) -> str:
    """A quoted sentence as one line: a sentence of hard-wrapped prose (or of a block quote)
    spans line breaks."""
    return _LINE_BREAKS.sub(" ", text)


def _normalised(text: str) -> str:
    return " ".join(_WORDS.findall(text.lower()))


class ExtractiveGenerator:
    """Best supporting sentences of the top chunks, with ``[n]`` citations.

    Args:
        embedder: scores sentences against the query (the same model as retrieval).
        max_sentences: sentences in the answer.
        context_chunks: how many top chunks to quote from.
        min_relative_score: drop sentences scoring below this fraction of the best one.
        candidate_tokens: the most tokens (estimated, padding included) of candidate sentences
            embedded per answer; at least ``max_sentences`` candidates are. ``None``: embed all.
    """

    name = "extractive"
    NOT_FOUND = "No supporting passage was found in the documents."
    # Characters per word-piece token of English text, to estimate a batch's cost without
    # tokenizing it.
    CHARS_PER_TOKEN = 4.0

    def __init__(
        self,
        embedder: Embedder,
        *,
        max_sentences: int = 3,
        context_chunks: int = 5,
        min_relative_score: float = 0.8,
        candidate_tokens: int | None = 160,
    ) -> None:
        if max_sentences <= 0 or context_chunks <= 0:
            raise ValueError("max_sentences and context_chunks must be > 0")
        if candidate_tokens is not None and candidate_tokens <= 0:
            raise ValueError("candidate_tokens must be > 0 (or None)")
        self.embedder = embedder
        self.max_sentences = max_sentences
        self.context_chunks = context_chunks
        self.min_relative_score = min_relative_score
        self.candidate_tokens = candidate_tokens
        self._terms = Bm25Encoder()

    def candidates(self, chunks: Sequence[RetrievedChunk]) -> list[_Sentence]:
        """The whole sentences of ``chunks`` in rank order, each once."""
        seen_at: set[tuple[str, int]] = set()
        seen_text: set[str] = set()
        out: list[_Sentence] = []
        for chunk in chunks:
            for lo, hi in chunk_sentences(chunk):
                text = chunk.text[lo:hi]
                key, norm = (chunk.doc_id, chunk.start + lo), _normalised(text)
                if len(text) <= 2 or key in seen_at or norm in seen_text:
                    continue
                seen_at.add(key)
                seen_text.add(norm)
                out.append(_Sentence(chunk, text, lo))
        return out

    def _shortlist(self, query: str, sentences: list[_Sentence]) -> list[tuple[_Sentence, str]]:
        """The candidates worth embedding, each with the text to embed: all of them when they
        fit ``candidate_tokens``, else the lexically best while they fit (ties: higher-ranked
        chunk, earlier sentence), at least ``max_sentences`` of them, cut short if that is the
        only way to fit."""
        budget = self.candidate_tokens
        tokens = [len(s.text) / self.CHARS_PER_TOKEN + 2 for s in sentences]
        # Sentences are embedded as one padded batch: its cost is count x the longest.
        if budget is None or len(sentences) * max(tokens, default=0) <= budget:
            return [(s, s.text) for s in sentences]
        terms = [set(self._terms.embed_document(s.text).indices) for s in sentences]
        df = Counter(t for ts in terms for t in ts)
        n = len(sentences)
        idf = {t: math.log(1 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}
        asked = set(self._terms.embed_query(query).indices)
        scores = [sum(idf[t] for t in ts & asked) for ts in terms]
        order = sorted(range(n), key=lambda i: -scores[i])  # stable: rank order breaks ties
        chosen = order[: self.max_sentences]
        for i in order[self.max_sentences :]:
            if (len(chosen) + 1) * max(tokens[j] for j in [*chosen, i]) > budget:
                break
            chosen.append(i)
        # The first max_sentences go in whatever their length; long ones are scored on their
        # beginning so that the batch still fits the budget.
        width = max(1, int((budget / len(chosen) - 2) * self.CHARS_PER_TOKEN))
        return [(sentences[i], sentences[i].text[:width]) for i in sorted(chosen)]

    def generate(
        self,
        query: str,
        retrieval: RetrievalResult,
        *,
        history: Sequence[dict[str, str]] = (),
        instructions: str | None = None,
    ) -> Answer:
        """Quote the best sentences; ``history`` and ``instructions`` need an LLM and are unused."""
        top = retrieval.chunks[: self.context_chunks]
        shortlist = self._shortlist(query, self.candidates(top))
        if not shortlist:
            return Answer(self.NOT_FOUND, self.name, abstained=True, context=top)
        sentences = [sentence for sentence, _ in shortlist]
        query_vec = (
            retrieval.query_vector
            if retrieval.query_vector is not None
            else self.embedder.embed_query(query)
        )
        vectors = self.embedder.embed_documents([text for _, text in shortlist])
        scores = vectors @ np.asarray(query_vec)
        best = float(scores.max())
        order = np.argsort(-scores)[: self.max_sentences]
        chosen = [
            int(i) for i in order if scores[i] >= best * self.min_relative_score or i == order[0]
        ]
        chosen.sort(key=lambda i: (sentences[i].chunk.rank, sentences[i].offset))
        parts: list[str] = []
        cited: dict[int, Citation] = {}
        for i in chosen:
            chunk = sentences[i].chunk
            # The quote's own "[n]" would read as a citation: only grounded's may.
            parts.append(f"{neutralise_markers(_one_line(sentences[i].text))} [{chunk.rank}]")
            cited.setdefault(chunk.rank, Citation.of(chunk.rank, chunk))
        citations = sorted(cited.values(), key=lambda c: c.number)
        return Answer(" ".join(parts), self.name, citations, context=top)

    def stream(
        self,
        query: str,
        retrieval: RetrievalResult,
        *,
        history: Sequence[dict[str, str]] = (),
        instructions: str | None = None,
    ) -> Iterator[str | Answer]:
        """The whole text at once, then the :class:`Answer`."""
        answer = self.generate(query, retrieval, history=history, instructions=instructions)
        yield answer.text
        yield answer
