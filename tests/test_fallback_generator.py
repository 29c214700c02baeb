"""FallbackGenerator: the primary's answer, or the fallback's marked degraded when it fails."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from support.fake_llm import FakeLLM

from ingest.embedding import Embedder
from service.fallback import FallbackGenerator
from service.generation import Answer, ExtractiveGenerator, StreamReset
from service.llm import OpenAIChat
from service.llm_generation import LLMGenerator
from service.retrieval import RetrievalResult, RetrievedChunk
from service.tokens import HuggingFaceTokenCounter

REPLY = "Cats purr at 25 to 150 Hz [1]."
CATS = "Domestic cats purr at a frequency of 25 to 150 Hz. Purring is produced by the larynx."
BREAD = "Sourdough bread rises because wild yeast ferments the dough over many hours."


def _chunk(rank: int, doc_id: str, text: str) -> RetrievedChunk:
    return RetrievedChunk(rank, 1.0, f"{doc_id}-0", doc_id, 0, doc_id, text, "", 0, len(text))


@pytest.fixture
def retrieval() -> RetrievalResult:
    return RetrievalResult([_chunk(1, "cats", CATS), _chunk(2, "bread", BREAD)], {})


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with FakeLLM(REPLY) as llm:
        yield llm


@pytest.fixture
def generator(fake: FakeLLM, embedder: Embedder) -> FallbackGenerator:
    llm = OpenAIChat(
        base_url=fake.url, api_key=None, model="fake-model", timeout=5.0, deadline=8.0, backoff=0.01
    )
    primary = LLMGenerator(llm, HuggingFaceTokenCounter(embedder.tokenizer))
    return FallbackGenerator(primary, ExtractiveGenerator(embedder))


def _split(items: list[Any]) -> tuple[list[str | StreamReset], Answer]:
    *deltas, answer = items
    assert isinstance(answer, Answer) and not any(isinstance(d, Answer) for d in deltas)
    return deltas, answer


def test_generate_answers_with_the_primary(generator: FallbackGenerator, retrieval: Any) -> None:
    answer = generator.generate("how fast do cats purr?", retrieval)
    assert generator.name == "llm"
    assert answer.text == REPLY and answer.generator == "llm"
    assert not answer.degraded and answer.degraded_reason is None


def test_generate_falls_back_when_the_primary_fails(
    generator: FallbackGenerator, retrieval: Any, fake: FakeLLM
) -> None:
    fake.script(*["500"] * 10)
    answer = generator.generate("how fast do cats purr?", retrieval)
    assert answer.generator == "extractive" and "25 to 150 Hz" in answer.text
    assert answer.degraded and answer.degraded_reason and "HTTP 500" in answer.degraded_reason
    assert answer.citations and answer.citations[0].doc_id == "cats"


def test_stream_passes_the_primary_through(generator: FallbackGenerator, retrieval: Any) -> None:
    deltas, answer = _split(list(generator.stream("how fast do cats purr?", retrieval)))
    assert len(deltas) > 1 and all(isinstance(d, str) for d in deltas)
    assert "".join(str(d) for d in deltas) == answer.text == REPLY
    assert answer.generator == "llm" and not answer.degraded


def test_stream_failing_before_text_sends_only_the_fallback(
    generator: FallbackGenerator, retrieval: Any, fake: FakeLLM
) -> None:
    fake.script(*["500"] * 10)
    deltas, answer = _split(list(generator.stream("how fast do cats purr?", retrieval)))
    assert deltas == [answer.text]  # no reset: nothing was sent to take back
    assert answer.generator == "extractive" and "25 to 150 Hz" in answer.text
    assert answer.degraded and answer.degraded_reason and "HTTP 500" in answer.degraded_reason


def test_stream_failing_after_text_resets_then_sends_the_fallback(
    generator: FallbackGenerator, retrieval: Any, fake: FakeLLM
) -> None:
    fake.script("break")
    deltas, answer = _split(list(generator.stream("how fast do cats purr?", retrieval)))
    assert deltas[:2] == ["Partial ", "answer "]
    reset = deltas[2]
    assert isinstance(reset, StreamReset) and reset.reason == answer.degraded_reason
    assert deltas[3:] == [answer.text]
    assert answer.generator == "extractive" and answer.degraded and "25 to 150 Hz" in answer.text


def test_errors_other_than_llm_errors_are_not_swallowed(embedder: Embedder, retrieval: Any) -> None:
    class Broken:
        name = "broken"

        def generate(self, *args: Any, **kwargs: Any) -> Answer:
            raise RuntimeError("a bug, not an outage")

        def stream(self, *args: Any, **kwargs: Any) -> Iterator[str | Answer]:
            yield "x"
            raise RuntimeError("a bug, not an outage")

    generator = FallbackGenerator(Broken(), ExtractiveGenerator(embedder))
    with pytest.raises(RuntimeError):
        generator.generate("q", retrieval)
    with pytest.raises(RuntimeError):
        list(generator.stream("q", retrieval))


def test_extractive_stream_is_its_text_then_the_answer(embedder: Embedder, retrieval: Any) -> None:
    deltas, answer = _split(list(ExtractiveGenerator(embedder).stream("cats purr?", retrieval)))
    assert deltas == [answer.text] and answer.citations
