"""RagPipeline.from_settings with ready-made components, and the generator it answers with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support.fake_llm import FakeLLM
from support.llm_support import DOCS

from ingest.embedding import Embedder
from ingest.index import EdgeIndex
from ingest.settings import Settings
from service.fallback import FallbackGenerator
from service.generation import Answer
from service.llm import OpenAIChat
from service.pipeline import QueryOptions, QueryResult, RagPipeline, StreamReset
from service.retrieval import SearchParams
from service.tokens import build_token_counter

QUESTION = SearchParams("how fast do cats purr?", collection="kb", top_k=3)
REPLY = "Cats purr at 25 to 150 Hz [1]."


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", collection="kb", llm_backoff=0.01, **overrides)


def _stream(pipeline: RagPipeline, **options: Any) -> tuple[list[str | StreamReset], QueryResult]:
    _, items = pipeline.query_stream(QUESTION, QueryOptions(**options))
    *head, result = list(items)
    deltas = [d for d in head if not isinstance(d, QueryResult)]
    assert isinstance(result, QueryResult) and len(deltas) == len(head)  # one result, at the end
    return deltas, result


def test_ready_made_components_are_used(tmp_path: Path, embedder: Embedder) -> None:
    settings = _settings(tmp_path)
    counter = build_token_counter(settings, embedder)
    index = EdgeIndex(settings.data_dir)
    pipeline = RagPipeline.from_settings(settings, index=index, embedder=embedder, counter=counter)
    try:
        assert pipeline.index is index and pipeline.embedder is embedder
        assert pipeline.counter is counter
        assert pipeline.llm is None and pipeline.generator_name == "extractive"
        pipeline.ingest(DOCS, "kb")
        result = pipeline.query(QUESTION)
        assert result.answer.generator == "extractive" and "25 to 150 Hz" in result.answer.text
        deltas, streamed = _stream(pipeline)
        assert deltas == [streamed.answer.text] == [result.answer.text]
        assert "first_token_ms" not in streamed.timings  # quoted, not written by a model
    finally:
        pipeline.close()


def test_llm_answers_degrade_through_the_fallback_generator(
    tmp_path: Path, embedder: Embedder
) -> None:
    with FakeLLM(REPLY) as fake:
        settings = _settings(tmp_path, llm_base_url=fake.url, llm_max_retries=0)
        llm = OpenAIChat.from_settings(settings)
        pipeline = RagPipeline.from_settings(settings, embedder=embedder, llm=llm)
        try:
            assert pipeline.llm is llm and pipeline.generator_name == "llm"
            assert isinstance(pipeline._generator(None), FallbackGenerator)
            pipeline.ingest(DOCS, "kb")

            deltas, ok = _stream(pipeline)
            assert "".join(map(str, deltas)) == ok.answer.text == REPLY
            assert not ok.answer.degraded and "first_token_ms" in ok.timings

            fake.script("500")  # fails before any text: the fallback's text only
            deltas, early = _stream(pipeline)
            assert deltas == [early.answer.text] and early.answer.degraded
            assert "first_token_ms" not in early.timings

            fake.script("break")  # fails after text: reset, then the fallback's text
            deltas, late = _stream(pipeline)
            assert deltas[:2] == ["Partial ", "answer "] and isinstance(deltas[2], StreamReset)
            assert deltas[3:] == [late.answer.text] and late.answer.degraded
            assert "first_token_ms" in late.timings  # the model did send text first

            fake.script("500")
            answer: Answer = pipeline.query(QUESTION).answer
            assert answer.degraded and answer.generator == "extractive"
            assert answer.degraded_reason and "HTTP 500" in answer.degraded_reason
        finally:
            pipeline.close()
