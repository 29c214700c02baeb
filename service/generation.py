"""Answer generation. The extractive generator needs no LLM: it quotes the retrieved text.

It splits the top chunks into sentences (pysbd, with character spans), scores each sentence by
cosine similarity to the query embedding, keeps the best few, and writes them in document order,
each followed by a ``[n]`` citation that points at the n-th retrieved chunk. Bracketed numbers
inside the quoted text (``[3]``, ``[1, 2]``, a document forging citations) are rewritten as
``(3)``, ``(1, 2)`` first, so every ``[n]`` in the answer is one grounded wrote and resolves to
``answer.citations``. An LLM generator (:mod:`service.llm_generation`) and the LLM-with-fallback
(:mod:`service.fallback`) plug into the same :class:`Generator` slot.

Example::

    answer = ExtractiveGenerator(embedder).generate("what is BM25?", result)
    print(answer.text)   # "BM25 is a ranking function ... [1]"
    for item in ExtractiveGenerator(embedder).stream("what is BM25?", result):
        ...              # the text, then the Answer
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ingest.embedding import Embedder

from .citations import neutralise_markers
from .retrieval import RetrievalResult, RetrievedChunk
from .sentences import sentence_spans


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


class ExtractiveGenerator:
    """Best supporting sentences of the top chunks, with ``[n]`` citations.

    Args:
        embedder: scores sentences against the query (the same model as retrieval).
        max_sentences: sentences in the answer.
        context_chunks: how many top chunks to quote from.
        min_relative_score: drop sentences scoring below this fraction of the best one.
    """

    name = "extractive"
    NOT_FOUND = "No supporting passage was found in the documents."

    def __init__(
        self,
        embedder: Embedder,
        *,
        max_sentences: int = 3,
        context_chunks: int = 5,
        min_relative_score: float = 0.8,
    ) -> None:
        if max_sentences <= 0 or context_chunks <= 0:
            raise ValueError("max_sentences and context_chunks must be > 0")
        self.embedder = embedder
        self.max_sentences = max_sentences
        self.context_chunks = context_chunks
        self.min_relative_score = min_relative_score

    def _sentences(self, chunk: RetrievedChunk) -> list[_Sentence]:
        spans = sentence_spans(chunk.text)
        return [
            _Sentence(chunk, span.sent.strip(), span.start)
            for span in spans
            if len(span.sent.strip()) > 2
        ]

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
        sentences = [s for chunk in top for s in self._sentences(chunk)]
        if not sentences:
            return Answer(self.NOT_FOUND, self.name, abstained=True, context=top)
        query_vec = (
            retrieval.query_vector
            if retrieval.query_vector is not None
            else self.embedder.embed_query(query)
        )
        scores = self.embedder.embed_documents([s.text for s in sentences]) @ np.asarray(query_vec)
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
            parts.append(f"{neutralise_markers(sentences[i].text)} [{chunk.rank}]")
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
