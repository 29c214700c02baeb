"""ExtractiveGenerator: whole sentences of the documents, each once, from the sentence offsets
ingest stored (no split at query time), and still whole sentences on points written before."""

from __future__ import annotations

import itertools
import re
from typing import Any

import numpy as np
import pytest

import ingest.sentences
from ingest.build import build_ingestor
from ingest.chunking import TokenChunker
from ingest.documents import Chunk, Document, point_id
from ingest.embedding import Embedder, SentenceTransformerEmbedder
from ingest.index import IndexPoint, Manifest, VectorIndex
from ingest.payload import chunk_payload
from ingest.sentences import sentence_bounds
from ingest.settings import Settings
from ingest.sparse import Bm25Encoder, Bm25Params
from service.generation import ExtractiveGenerator
from service.retrieval import HybridRetriever, RetrievalResult, RetrievedChunk, SearchParams

KEYS = (
    "API keys belong to a tenant. Create one with grounded keys create. "
    "Keys are shown once and stored hashed. Rotate keys every ninety days. "
    "To rotate a key, create the new one first. Then switch every client to it. "
    "Revoke the old key last. A revoked key fails at once. "
    "Admin keys can drop collections. Read keys can only search. "
    "Ingest keys can write documents. Rate limits apply per key. "
    "The limits use a moving window. A fleet shares them through Redis."
)
# The same advice in another document, with other spacing and case.
COPY = "Some notes.  ROTATE keys every   ninety days! Nothing else."
QUESTION = "How do I rotate an API key?"
QUOTE = re.compile(r"(.+?) \[(\d+)\](?: |$)", flags=re.DOTALL)


def _retrieved(chunks: list[Chunk], offsets: bool = True) -> list[RetrievedChunk]:
    return [
        RetrievedChunk(
            rank=rank,
            score=1.0 / rank,
            id=f"{c.doc_id}-{c.chunk_index}",
            doc_id=c.doc_id,
            chunk_index=c.chunk_index,
            title=c.title,
            text=c.text,
            source="",
            start=c.start,
            end=c.end,
            sentences=list(c.sentences) if offsets else None,
        )
        for rank, c in enumerate(chunks, start=1)
    ]


def _every_sentence(embedder: Embedder, **kwargs: Any) -> ExtractiveGenerator:
    """A generator that quotes every candidate: what it may quote at all."""
    options: dict[str, Any] = {
        "max_sentences": 100,
        "context_chunks": 50,
        "min_relative_score": -1.0,
        "candidate_tokens": None,
    }
    return ExtractiveGenerator(embedder, **(options | kwargs))


@pytest.fixture(scope="module")
def chunks(embedder: SentenceTransformerEmbedder) -> list[Chunk]:
    chunker = TokenChunker(embedder.tokenizer, 40, 12)
    out = chunker.chunk(Document("keys", KEYS)) + chunker.chunk(Document("copy", COPY))
    assert any(a.doc_id == b.doc_id and b.start < a.end for a, b in itertools.pairwise(out))
    return out


def test_answer_quotes_whole_sentences_each_once(
    embedder: SentenceTransformerEmbedder, chunks: list[Chunk]
) -> None:
    answer = _every_sentence(embedder).generate(QUESTION, RetrievalResult(_retrieved(chunks), {}))
    quotes = [quote for quote, _ in QUOTE.findall(answer.text)]
    whole = {
        doc.id: [doc.text[lo:hi] for lo, hi in sentence_bounds(doc.text)]
        for doc in (Document("keys", KEYS), Document("copy", COPY))
    }
    assert len(quotes) == len(set(quotes))
    # Every sentence of both documents once, except the copy's repeat of a "keys" sentence.
    assert sorted(quotes) == sorted(
        whole["keys"] + [s for s in whole["copy"] if not s.startswith("ROTATE")]
    )


def test_a_sentence_of_wrapped_prose_is_quoted_whole_on_one_line(
    embedder: SentenceTransformerEmbedder,
) -> None:
    # docs/*.md are wrapped at 100 columns: each line used to be quoted as a "sentence"
    wrapped = (
        "Every document has an id (for files: the path relative to the folder you name, including\n"
        "the folder's own name) and a content\nhash over its text, so re-ingesting is idempotent.\n"
        "\nUnrelated paragraph about rate limits.\n"
        "\n> A quoted note says that the quota\n> resets every hour for each tenant.\n"
    )
    chunks = TokenChunker(embedder.tokenizer, 256, 32).chunk(Document("ingest", wrapped))
    retrieval = RetrievalResult(_retrieved(chunks), {})
    answer = ExtractiveGenerator(embedder, max_sentences=1).generate(
        "How is re-ingesting idempotent?", retrieval
    )
    assert answer.text == (
        "Every document has an id (for files: the path relative to the folder you name, "
        "including the folder's own name) and a content hash over its text, so re-ingesting is "
        "idempotent. [1]"
    )
    quoted = ExtractiveGenerator(embedder, max_sentences=1).generate(
        "When does the quota reset for a tenant?", retrieval
    )
    assert quoted.text == (
        "> A quoted note says that the quota resets every hour for each tenant. [1]"
    )


def test_default_answer_is_the_best_whole_sentences(
    embedder: SentenceTransformerEmbedder, chunks: list[Chunk]
) -> None:
    retrieval = RetrievalResult(_retrieved(chunks), {})
    answer = ExtractiveGenerator(embedder).generate(QUESTION, retrieval)
    quotes = QUOTE.findall(answer.text)
    assert 1 <= len(quotes) <= 3 and answer.citations
    sentences = {KEYS[lo:hi] for lo, hi in sentence_bounds(KEYS)} | {
        COPY[lo:hi] for lo, hi in sentence_bounds(COPY)
    }
    assert all(quote in sentences for quote, _ in quotes)
    assert any("rotate" in quote.lower() for quote, _ in quotes)


def test_stored_offsets_mean_no_split_at_query_time(
    embedder: SentenceTransformerEmbedder, chunks: list[Chunk], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_split(text: str) -> list[int]:
        raise AssertionError("the extractive generator split text at query time")

    monkeypatch.setattr(ingest.sentences, "_starts", no_split)
    answer = _every_sentence(embedder).generate(QUESTION, RetrievalResult(_retrieved(chunks), {}))
    assert "Revoke the old key last. [" in answer.text
    with pytest.raises(AssertionError, match="split text at query time"):
        _every_sentence(embedder).generate(
            QUESTION, RetrievalResult(_retrieved(chunks, offsets=False), {})
        )


def test_points_without_offsets_are_split_and_cut_off_pieces_dropped(
    embedder: SentenceTransformerEmbedder,
) -> None:
    # A window of the old token chunker: it began and ended inside sentences.
    start = KEYS.index("ce and stored hashed")
    end = KEYS.index("Then switch every") + len("Then switch")
    text = KEYS[start:end]
    chunk = RetrievedChunk(1, 1.0, "k-1", "keys", 1, "", text, "", start, end)
    answer = _every_sentence(embedder).generate(QUESTION, RetrievalResult([chunk], {}))
    assert [q for q, _ in QUOTE.findall(answer.text)] == [
        "Rotate keys every ninety days.",
        "To rotate a key, create the new one first.",
    ]
    # At the start of a document, the first sentence is whole whatever its first letter.
    first = RetrievedChunk(1, 1.0, "k-0", "keys", 0, "", "grounded keys rotate. Fine.", "", 0, 27)
    answer = _every_sentence(embedder).generate(QUESTION, RetrievalResult([first], {}))
    assert answer.text == "grounded keys rotate. [1] Fine. [1]"


def test_pieces_of_an_over_long_sentence_are_not_quoted(
    embedder: SentenceTransformerEmbedder,
) -> None:
    runaway = "Keys rotate " + " ".join(f"then tenant{i} rotates" for i in range(60)) + "."
    chunks = TokenChunker(embedder.tokenizer, 40, 8).chunk(
        Document("d", f"{runaway} Rotate keys yearly.")
    )
    answer = _every_sentence(embedder).generate(QUESTION, RetrievalResult(_retrieved(chunks), {}))
    assert [q for q, _ in QUOTE.findall(answer.text)] == ["Rotate keys yearly."]


class _Counting:
    """The real embedder, counting the texts it embeds."""

    def __init__(self, embedder: SentenceTransformerEmbedder) -> None:
        self.inner = embedder
        self.name, self.dimension, self.max_tokens = "m", embedder.dimension, 256
        self.tokenizer = embedder.tokenizer
        self.embedded: list[str] = []

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        self.embedded.extend(texts)
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> np.ndarray:
        return self.inner.embed_query(text)


def test_candidates_embedded_are_bounded_and_chosen_by_the_question_terms(
    embedder: SentenceTransformerEmbedder, chunks: list[Chunk]
) -> None:
    counting = _Counting(embedder)
    retrieval = RetrievalResult(_retrieved(chunks), {})
    answer = ExtractiveGenerator(counting, candidate_tokens=40).generate(QUESTION, retrieval)
    total = len(ExtractiveGenerator(counting).candidates(retrieval.chunks))
    # At least max_sentences, then only what fits 40 tokens: far from all 17.
    assert 3 <= len(counting.embedded) < total
    assert {"Rotate keys every ninety days.", "To rotate a key, create the new one first."} <= set(
        counting.embedded
    )
    assert "To rotate a key, create the new one first. [" in answer.text
    counting.embedded.clear()
    ExtractiveGenerator(counting, candidate_tokens=None).generate(QUESTION, retrieval)
    assert len(counting.embedded) == total


def test_a_collection_built_before_sentence_offsets_still_searches_and_answers(
    index: VectorIndex, embedder: SentenceTransformerEmbedder
) -> None:
    """Points as the token-window chunker wrote them (no ``sentences`` in the payload, the old
    signature in the manifest) serve searches and whole-sentence answers; re-ingesting the
    document with today's chunker replaces them with points that carry their offsets."""
    settings = Settings(chunk_size=40, chunk_overlap=12)
    index.create_collection(
        "old", Manifest(embedder.name, embedder.dimension, Bm25Params(), "tokens:40:12")
    )
    doc = Document("keys", KEYS, title="Keys")
    chunks = TokenChunker(embedder.tokenizer, 40, 12).chunk(doc)
    vectors = embedder.embed_documents([c.embed_text for c in chunks])
    bm25 = Bm25Encoder()
    points = []
    for chunk, vector in zip(chunks, vectors, strict=True):
        payload = chunk_payload(chunk, doc.content_hash("tokens:40:12"), len(chunks))
        del payload["sentences"]
        points.append(
            IndexPoint(
                point_id(doc.id, chunk.chunk_index),
                vector,
                bm25.embed_document(chunk.embed_text),
                payload,
            )
        )
    index.upsert("old", points)

    retriever = HybridRetriever(index, embedder, settings)
    result = retriever.retrieve(SearchParams(QUESTION, collection="old", top_k=5))
    assert result.chunks and all(c.sentences is None for c in result.chunks)
    answer = _every_sentence(embedder).generate(QUESTION, result)
    whole = {KEYS[lo:hi] for lo, hi in sentence_bounds(KEYS)}
    quotes = [q for q, _ in QUOTE.findall(answer.text)]
    assert quotes and set(quotes) <= whole and len(quotes) == len(set(quotes))

    report = build_ingestor(settings, index, embedder, "old").ingest([doc])
    assert (report.updated, report.unchanged) == (1, 0)  # another chunker: re-chunked
    manifest = index.manifest("old")
    assert manifest is not None and manifest.chunker == "tokens:40:12"  # as it was created
    result = retriever.retrieve(SearchParams(QUESTION, collection="old", top_k=5))
    assert result.chunks and all(c.sentences for c in result.chunks)
