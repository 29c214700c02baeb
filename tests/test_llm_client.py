"""The LLM client against injected faults: retries, deadline, and no exception escapes raw."""

from __future__ import annotations

import pytest
from support.fake_llm import FakeLLM

from service.llm import LLMError, OpenAIChat, StreamEnd

MESSAGES = [{"role": "user", "content": "hi"}]


def client(
    url: str, *, timeout: float = 2.0, deadline: float = 10.0, max_retries: int = 3
) -> OpenAIChat:
    return OpenAIChat(
        base_url=url,
        api_key=None,
        model=None,
        timeout=timeout,
        deadline=deadline,
        max_retries=max_retries,
        backoff=0.05,
    )


def test_reply_usage_and_model_discovery() -> None:
    with FakeLLM("Paris is the capital [1].") as llm:
        chat = client(llm.url)
        reply = chat.complete(MESSAGES, max_tokens=20)
    assert reply.text == "Paris is the capital [1]."
    assert reply.model == "fake-model"  # discovered from GET /v1/models
    assert reply.usage["completion_tokens"] == 5
    assert llm.requests[0]["max_tokens"] == 20
    assert llm.requests[0]["temperature"] == 0.0


@pytest.mark.parametrize("fault", ["429", "500", "garbage", "empty", "timeout"])
def test_transient_faults_are_retried(fault: str) -> None:
    with FakeLLM("fine", sleep=1.5) as llm:
        llm.script(fault, fault)
        reply = client(llm.url, timeout=0.5).complete(MESSAGES)
    assert reply.text == "fine"
    assert len(llm.requests) == 3


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("500", "HTTP 500"),
        ("429", "HTTP 429"),
        ("garbage", "unusable"),
        ("empty", "no choices"),
        ("timeout", "timed out"),
    ],
)
def test_persistent_faults_become_one_llm_error(fault: str, reason: str) -> None:
    with FakeLLM("never", sleep=1.5) as llm:
        llm.script(*[fault] * 10)
        with pytest.raises(LLMError) as info:
            client(llm.url, timeout=0.5, max_retries=2).complete(MESSAGES)
    assert reason in info.value.reason
    assert info.value.attempts == 3
    assert len(llm.requests) == 3


def test_client_errors_are_not_retried() -> None:
    with FakeLLM("never") as llm:
        llm.script("401")
        with pytest.raises(LLMError, match="HTTP 401"):
            client(llm.url).complete(MESSAGES)
    assert len(llm.requests) == 1


def test_deadline_bounds_all_attempts() -> None:
    # Every attempt times out after 1 s and 10 retries are allowed, but the 1.5 s deadline leaves
    # room for only two: the first (1 s), then one cut to the deadline's remaining ~0.45 s.
    with FakeLLM("never", sleep=3.0) as llm:
        llm.script(*["timeout"] * 12)
        with pytest.raises(LLMError) as info:
            client(llm.url, timeout=1.0, deadline=1.5, max_retries=10).complete(MESSAGES)
    assert info.value.attempts == 2, info.value.reason
    assert len(llm.requests) == 2
    assert "after 2 attempt(s)" in info.value.reason


def test_stream_yields_deltas_then_the_whole_reply() -> None:
    with FakeLLM("BM25 ranks by term frequency [1].") as llm:
        items = list(client(llm.url).stream(MESSAGES))
    *head, end = items
    deltas = [d for d in head if isinstance(d, str)]
    assert len(deltas) == len(head) == 6
    assert isinstance(end, StreamEnd)
    assert "".join(deltas) == end.completion.text == "BM25 ranks by term frequency [1]."
    assert end.completion.usage["total_tokens"] == 106


def test_stream_retries_before_the_first_delta_and_fails_cleanly_after() -> None:
    with FakeLLM("recovered") as llm:
        llm.script("500")
        assert [i for i in client(llm.url).stream(MESSAGES) if isinstance(i, str)] == ["recovered"]
        llm.script("break")
        seen: list[str | StreamEnd] = []
        with pytest.raises(LLMError, match="stream"):
            for item in client(llm.url).stream(MESSAGES):
                seen.append(item)
    assert seen == ["Partial ", "answer "]
