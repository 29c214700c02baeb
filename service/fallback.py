"""A generator that answers with a fallback when its primary fails: LLM trouble degrades.

:class:`FallbackGenerator` wraps two :class:`~service.generation.Generator` behind the same
protocol (as Haystack's ``FallbackChatGenerator`` does): it answers with ``primary``, and when
that raises :class:`~service.llm.LLMError` (timeouts, rate limits, broken streams, malformed
replies, a prompt that does not fit) it answers with ``fallback`` instead, marked
``degraded=True`` with the error's reason. Streaming, a primary that breaks off after sending
text yields a :class:`~service.generation.StreamReset` before the fallback's text.

Example::

    generator = FallbackGenerator(LLMGenerator(llm, counter), ExtractiveGenerator(embedder))
    answer = generator.generate("what is BM25?", retrieval)
    answer.degraded, answer.degraded_reason    # (True, "timeout") when the LLM timed out
    for item in generator.stream("what is BM25?", retrieval):
        ...     # text deltas, a StreamReset if the LLM broke off, then the Answer
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from .generation import Answer, Generator, StreamReset
from .llm import LLMError, Message
from .retrieval import RetrievalResult


class FallbackGenerator:
    """``primary``'s answer, or ``fallback``'s marked ``degraded`` when ``primary`` fails.

    Args:
        primary: the preferred generator (the LLM); only its :class:`~service.llm.LLMError`
            is caught, anything else is a bug and raises.
        fallback: answers when ``primary`` fails (the extractive generator: it needs no LLM).
    """

    def __init__(self, primary: Generator, fallback: Generator) -> None:
        self.primary = primary
        self.fallback = fallback
        self.name = primary.name

    def generate(
        self,
        query: str,
        retrieval: RetrievalResult,
        *,
        history: Sequence[Message] = (),
        instructions: str | None = None,
    ) -> Answer:
        try:
            return self.primary.generate(
                query, retrieval, history=history, instructions=instructions
            )
        except LLMError as exc:
            answer = self.fallback.generate(
                query, retrieval, history=history, instructions=instructions
            )
            return _degraded(answer, exc.reason)

    def stream(
        self,
        query: str,
        retrieval: RetrievalResult,
        *,
        history: Sequence[Message] = (),
        instructions: str | None = None,
    ) -> Iterator[str | StreamReset | Answer]:
        """``primary``'s stream; when it fails, a :class:`StreamReset` if it had sent text, then
        ``fallback``'s stream with its :class:`Answer` marked ``degraded``."""
        sent = False
        try:
            for item in self.primary.stream(
                query, retrieval, history=history, instructions=instructions
            ):
                sent = sent or not isinstance(item, Answer)
                yield item
            return
        except LLMError as exc:
            reason = exc.reason
        if sent:
            yield StreamReset(reason)
        for item in self.fallback.stream(
            query, retrieval, history=history, instructions=instructions
        ):
            yield _degraded(item, reason) if isinstance(item, Answer) else item


def _degraded(answer: Answer, reason: str) -> Answer:
    answer.degraded = True
    answer.degraded_reason = reason
    return answer
