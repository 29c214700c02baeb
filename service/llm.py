"""A chat LLM behind any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp server).

The ``openai`` SDK does the HTTP; this module adds what a service needs around it: retries of
timeouts, connection errors, 429 and 5xx with exponential backoff inside one total deadline
(``Retry-After`` is honoured when it fits), and one error type for everything that can go wrong,
so callers can degrade instead of failing. A malformed or empty reply is an :class:`LLMError`,
never an unhandled exception.

Example::

    llm = OpenAIChat.from_settings(settings)
    reply = llm.complete([{"role": "user", "content": "Say hi"}], max_tokens=8)
    print(reply.text, reply.usage)
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import openai

from ingest.settings import Settings

from . import metrics

Message = dict[str, str]
T = TypeVar("T")


class LLMError(Exception):
    """The LLM could not give a usable reply; ``reason`` says why in one line."""

    def __init__(self, reason: str, attempts: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts


def _failed(reason: str, attempts: int = 1) -> LLMError:
    """The error of a call that failed for good, counted once in the LLM failure metric (only
    here, never for an attempt that is retried, so a call counts once however often it tried)."""
    metrics.observe_llm_failure(reason)
    return LLMError(reason, attempts)


@dataclass
class Completion:
    text: str
    model: str
    usage: dict[str, int] = field(default_factory=dict)
    finish_reason: str | None = None


@dataclass
class StreamEnd:
    """Last item of :meth:`ChatLLM.stream`: the whole text and the usage when the server sent it."""

    completion: Completion


class ChatLLM(Protocol):
    @property
    def model(self) -> str: ...

    def complete(
        self, messages: Sequence[Message], *, max_tokens: int | None = None
    ) -> Completion: ...

    def stream(
        self, messages: Sequence[Message], *, max_tokens: int | None = None
    ) -> Iterator[str | StreamEnd]: ...


_RETRYABLE = (
    openai.APITimeoutError,
    openai.APIConnectionError,
    openai.RateLimitError,
    openai.InternalServerError,
)


def describe(exc: BaseException) -> str:
    if isinstance(exc, openai.APITimeoutError):
        return "LLM request timed out"
    if isinstance(exc, openai.APIConnectionError):
        return f"LLM endpoint unreachable ({exc.__cause__ or exc})"
    if isinstance(exc, openai.APIStatusError):
        return f"LLM endpoint answered HTTP {exc.status_code}: {_short(exc.message)}"
    return f"LLM reply unusable: {_short(str(exc)) or type(exc).__name__}"


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class OpenAIChat:
    """Chat completions with retries inside a deadline.

    Args:
        base_url: the endpoint, e.g. ``http://localhost:8080/v1``; ``None`` = api.openai.com.
        api_key: sent as a bearer token; local servers accept any value.
        model: model name; ``None`` = the endpoint's first listed model (resolved once).
        temperature / max_tokens: sampling defaults.
        timeout: seconds per attempt. deadline: seconds for all attempts and backoff together.
        max_retries: retries after the first attempt. backoff: first delay, doubled each retry.
    """

    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str | None,
        model: str | None,
        temperature: float = 0.0,
        max_tokens: int = 512,
        timeout: float = 30.0,
        deadline: float = 60.0,
        max_retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        self._client = openai.OpenAI(
            base_url=base_url, api_key=api_key or "unused", timeout=timeout, max_retries=0
        )
        self._model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.deadline = deadline
        self.max_retries = max_retries
        self.backoff = backoff

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIChat:
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
        return cls(
            base_url=settings.llm_base_url,
            api_key=key,
            model=settings.llm_model,
            temperature=settings.llm_temperature,
            max_tokens=settings.llm_max_tokens,
            timeout=settings.llm_timeout,
            deadline=settings.llm_deadline,
            max_retries=settings.llm_max_retries,
            backoff=settings.llm_backoff,
        )

    @property
    def model(self) -> str:
        if self._model is None:
            models = self._with_retries(lambda timeout: self._client.models.list(timeout=timeout))
            names = [m.id for m in models.data] if models.data else []
            if not names:
                raise _failed("the LLM endpoint lists no models; set GROUNDED_LLM_MODEL")
            self._model = names[0]
        return self._model

    def _with_retries(self, call: Callable[[float], T]) -> T:
        """``call(timeout)`` until it succeeds, a non-retryable error, or the deadline."""
        deadline = time.monotonic() + self.deadline
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            try:
                return call(max(0.1, min(self.timeout, remaining)))
            except LLMError as exc:
                error: BaseException = exc
            except _RETRYABLE as exc:
                error = exc
            except openai.APIStatusError as exc:  # 4xx other than 429: retrying will not help
                raise _failed(describe(exc), attempt) from exc
            except (openai.APIError, ValueError, TypeError, AttributeError) as exc:
                error = exc  # garbage bodies: often a proxy hiccup, so worth one more try
            delay = self.backoff * 2 ** (attempt - 1) * random.uniform(0.8, 1.2)
            hinted = _retry_after(error)
            if hinted is not None:
                delay = max(delay, hinted)
            if attempt > self.max_retries or time.monotonic() + delay >= deadline:
                reason = error.reason if isinstance(error, LLMError) else describe(error)
                raise _failed(f"{reason} (after {attempt} attempt(s))", attempt) from error
            time.sleep(delay)

    def _request(self, messages: Sequence[Message], max_tokens: int | None) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": list(messages),
            "temperature": self.temperature,
            "max_tokens": max_tokens or self.max_tokens,
        }

    def complete(self, messages: Sequence[Message], *, max_tokens: int | None = None) -> Completion:
        request = self._request(messages, max_tokens)

        def call(timeout: float) -> Completion:
            response = self._client.chat.completions.create(**request, timeout=timeout)
            if not getattr(response, "choices", None):
                raise LLMError("LLM reply has no choices")
            choice = response.choices[0]
            text = choice.message.content if choice.message else None
            if not isinstance(text, str) or not text.strip():
                raise LLMError("LLM reply is empty")
            usage = response.usage.model_dump(exclude_none=True) if response.usage else {}
            return Completion(
                text.strip(),
                response.model or request["model"],
                {k: v for k, v in usage.items() if isinstance(v, int)},
                choice.finish_reason,
            )

        return self._with_retries(call)

    def stream(
        self, messages: Sequence[Message], *, max_tokens: int | None = None
    ) -> Iterator[str | StreamEnd]:
        """Text deltas, then one :class:`StreamEnd`. Retries happen only before the first delta;
        a failure after it raises :class:`LLMError` to the consumer."""
        request = self._request(messages, max_tokens)

        def open_stream(timeout: float) -> tuple[Any, Any]:
            stream = self._client.chat.completions.create(
                **request, stream=True, stream_options={"include_usage": True}, timeout=timeout
            )
            iterator = iter(stream)
            # The first event proves the server accepted the request; errors before it retry.
            return stream, next(iterator, None)

        stream, first = self._with_retries(open_stream)
        parts: list[str] = []
        usage: dict[str, int] = {}
        finish: str | None = None
        model = request["model"]
        try:
            for event in itertools.chain([first] if first is not None else [], stream):
                if getattr(event, "usage", None):
                    usage = {
                        k: v for k, v in event.usage.model_dump().items() if isinstance(v, int)
                    }
                model = getattr(event, "model", None) or model
                for choice in getattr(event, "choices", None) or []:
                    delta = choice.delta.content if choice.delta else None
                    if delta:
                        parts.append(delta)
                        yield delta
                    finish = choice.finish_reason or finish
        except (openai.APIError, ValueError, TypeError, AttributeError) as exc:
            raise _failed(f"LLM stream broke off: {describe(exc)}") from exc
        if finish is None:  # every compatible server ends a complete stream with a finish_reason
            raise _failed("LLM stream broke off before it finished")
        text = "".join(parts).strip()
        if not text:
            raise _failed("LLM reply is empty")
        yield StreamEnd(Completion(text, model, usage, finish))
