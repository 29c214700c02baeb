"""LLM answers: citations, context packing under a token budget, abstention, degradation."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.fake_llm import FakeLLM, prompt_text
from support.llm_support import llm_pipeline

from ingest.embedding import Embedder
from service.citations import is_abstention, parse_answer
from service.pipeline import QueryOptions
from service.prompts import MESSAGE_OVERHEAD, NOT_FOUND, build_prompt
from service.retrieval import RetrievedChunk, SearchParams
from service.tokens import HuggingFaceTokenCounter


@pytest.mark.parametrize(
    ("reply", "text", "cited", "dropped"),
    [
        ("Cats purr [1].", "Cats purr [1].", [1], []),
        ("A [2][1] and B [1, 3].", "A [2][1] and B [1][3].", [2, 1, 3], []),
        ("Range [1-3].", "Range [1][2][3].", [1, 2, 3], []),
        ("Made up [7]. True [2].", "Made up. True [2].", [2], [7]),
        ("All wrong [0] [4, 9].", "All wrong.", [], [0, 4, 9]),
        ("No brackets at all.", "No brackets at all.", [], []),
        ("Years [1889] stay [1].", "Years stay [1].", [1], [1889]),
    ],
)
def test_citations_are_resolved_or_dropped(
    reply: str, text: str, cited: list[int], dropped: list[int]
) -> None:
    parsed = parse_answer(reply, n_blocks=3)
    assert (parsed.text, parsed.cited, parsed.dropped) == (text, cited, dropped)


@pytest.mark.parametrize(
    ("text", "has_citations", "expected"),
    [
        (NOT_FOUND, False, True),
        ("I could not find the answer in the documents", False, True),
        ("The context does not mention the boiling point.", False, True),
        ("This is not found in the documents provided.", False, True),
        ("The passages do not say; but [1] gives the melting point.", True, False),
        ("Paris is the capital of France.", False, False),
    ],
)
def test_abstention_is_recognised(text: str, has_citations: bool, expected: bool) -> None:
    assert is_abstention(text, has_citations=has_citations) is expected


def _chunk(i: int, words: int) -> RetrievedChunk:
    text = " ".join(["cats", "purr", "softly"][j % 3] for j in range(words))
    return RetrievedChunk(i, 1.0, f"id{i}", f"doc{i}", 0, f"Title {i}", text, "", 0, len(text))


def test_prompt_is_packed_to_the_token_budget(embedder: Embedder) -> None:
    counter = HuggingFaceTokenCounter(embedder.tokenizer)
    chunks = [_chunk(i, 60 if i != 2 else 1000) for i in range(1, 13)]
    history = [{"role": "user", "content": f"turn {i} " * 30} for i in range(10)]
    window, reply = 1200, 200
    prompt = build_prompt(
        "which word?",
        chunks,
        counter,
        context_window=window,
        reply_tokens=reply,
        history=history,
        history_tokens=150,
    )
    used = sum(counter.count(m["content"]) + MESSAGE_OVERHEAD for m in prompt.messages)
    assert used <= window - reply
    assert prompt.prompt_tokens >= used - 2 * MESSAGE_OVERHEAD
    # chunk 2 is too big and is skipped; later, smaller chunks still go in
    assert "doc2" not in [c.doc_id for c in prompt.blocks]
    assert prompt.blocks[0].doc_id == "doc1" and 3 <= len(prompt.blocks) < 11
    system = prompt.messages[0]["content"]
    for n, block in enumerate(prompt.blocks, start=1):
        assert f"[{n}] Title {block.rank}" in system
    # history keeps only the most recent turns that fit, oldest first
    turns = [m["content"] for m in prompt.messages[1:-1]]
    assert turns and turns[-1].startswith("turn 9") and len(turns) < 10
    assert prompt.messages[-1] == {"role": "user", "content": "which word?"}


def test_a_single_oversized_chunk_is_cut_to_fit(embedder: Embedder) -> None:
    counter = HuggingFaceTokenCounter(embedder.tokenizer)
    prompt = build_prompt("q", [_chunk(1, 2000)], counter, context_window=700, reply_tokens=100)
    assert len(prompt.blocks) == 1
    assert counter.count(prompt.messages[0]["content"]) < 600
    with pytest.raises(ValueError, match="no room"):
        build_prompt("q", [_chunk(1, 10)], counter, context_window=300, reply_tokens=250)


def test_llm_answer_citations_resolve_to_context_chunks(tmp_path: Path, embedder: Embedder) -> None:
    def reply(body: dict) -> str:
        return "Cats purr at 25 to 150 Hz [1]. They purr when injured too [1][9]."

    with FakeLLM(reply) as llm:
        pipeline = llm_pipeline(tmp_path, embedder, llm.url)
        try:
            result = pipeline.query(
                SearchParams("how fast do cats purr?", collection="kb", top_k=3),
                QueryOptions(
                    instructions="Answer like a vet.",
                    history=[{"role": "user", "content": "hello"}],
                ),
            )
        finally:
            pipeline.close()
    answer = result.answer
    assert answer.generator == "llm" and answer.model == "fake-model"
    assert answer.text == "Cats purr at 25 to 150 Hz [1]. They purr when injured too [1]."
    assert answer.dropped_citations == [9]
    assert [c.doc_id for c in answer.citations] == ["cats"]
    assert answer.citations[0].chunk_id == answer.context[0].id
    assert answer.usage["completion_tokens"] > 0 and answer.usage["prompt_tokens_counted"] > 0
    assert {"retrieval_ms", "generate_ms", "total_ms"} <= set(result.timings)
    sent = llm.requests[0]["messages"]
    assert sent[0]["role"] == "system" and "Answer like a vet." in sent[0]["content"]
    assert "[1] Cats" in sent[0]["content"]
    assert sent[1] == {"role": "user", "content": "hello"}
    assert sent[-1] == {"role": "user", "content": "how fast do cats purr?"}


def test_model_abstention_and_score_floor(tmp_path: Path, embedder: Embedder) -> None:
    with FakeLLM(NOT_FOUND) as llm:
        pipeline = llm_pipeline(tmp_path, embedder, llm.url)
        try:
            said = pipeline.query(SearchParams("who won the 1998 world cup?", collection="kb"))
            assert said.answer.abstained and said.answer.citations == []
            assert said.answer.text == NOT_FOUND
            calls = len(llm.requests)
            pipeline.settings.abstain_min_similarity = 0.6
            floor = pipeline.query(SearchParams("who won the 1998 world cup?", collection="kb"))
            assert floor.answer.abstained and floor.answer.generator == "abstention-floor"
            assert len(llm.requests) == calls  # the LLM was not asked
            assert any("floor 0.6" in w for w in floor.warnings)
            assert all(c.similarity is not None for c in floor.retrieval.chunks)
        finally:
            pipeline.close()


def test_uncited_reply_gets_attributed_citations(tmp_path: Path, embedder: Embedder) -> None:
    reply = "Sourdough rises because wild yeast and bacteria ferment the dough. Mars is red."
    with FakeLLM(reply) as llm:
        pipeline = llm_pipeline(tmp_path, embedder, llm.url)
        try:
            result = pipeline.query(SearchParams("why does sourdough rise?", collection="kb"))
        finally:
            pipeline.close()
    answer = result.answer
    assert answer.citations_attributed
    assert [c.doc_id for c in answer.citations] == ["bread"]
    n = answer.citations[0].number
    assert answer.text.startswith(
        f"Sourdough rises because wild yeast and bacteria ferment the dough [{n}]."
    )
    assert answer.text.endswith("Mars is red.")  # matches no block: stays uncited


@pytest.mark.parametrize("fault", ["500", "timeout", "garbage", "empty"])
def test_llm_failure_degrades_to_extractive(tmp_path: Path, embedder: Embedder, fault: str) -> None:
    with FakeLLM("unused", sleep=2.0) as llm:
        llm.script(*[fault] * 10)
        pipeline = llm_pipeline(
            tmp_path, embedder, llm.url, llm_timeout=0.5, llm_deadline=3.0, llm_max_retries=1
        )
        try:
            result = pipeline.query(SearchParams("how fast do cats purr?", collection="kb"))
        finally:
            pipeline.close()
    answer = result.answer
    assert answer.degraded and answer.generator == "extractive"
    assert answer.degraded_reason and "attempt" in answer.degraded_reason
    assert "25 to 150 Hz" in answer.text and answer.citations[0].doc_id == "cats"


def test_prompt_mentions_only_packed_blocks(tmp_path: Path, embedder: Embedder) -> None:
    with FakeLLM("Paris [1].") as llm:
        pipeline = llm_pipeline(
            tmp_path, embedder, llm.url, llm_context_window=680, llm_max_tokens=100
        )
        try:
            result = pipeline.query(SearchParams("capital of France", collection="kb", top_k=5))
        finally:
            pipeline.close()
    system = prompt_text(llm.requests[0])
    assert len(result.answer.context) < 5  # 680 tokens hold the rules and only a few blocks
    assert f"[{len(result.answer.context) + 1}]" not in system


def test_sentence_offsets_are_right_under_concurrency() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from ingest.sentences import sentence_spans

    texts = [
        f"Doc {i} starts here. It has a second sentence {i}. And a third." * 3 for i in range(64)
    ]

    def check(text: str) -> bool:
        return all(text[s.start : s.end] == s.sent for s in sentence_spans(text))

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(check, texts))
