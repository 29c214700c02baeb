"""Answers written by an LLM from the retrieved chunks, with ``[n]`` citations checked.

The prompt (:mod:`service.prompts`) numbers the context blocks and fences their text as untrusted
data (a per-prompt nonce in the fence tag, forged tags and ``[n]`` markers in the text escaped);
the reply's citations are resolved to those blocks (:mod:`service.citations`), invalid ones are
dropped and reported, and a reply that says the documents lack the answer becomes ``abstained``.
LLM failures raise :class:`~service.llm.LLMError`; :class:`~service.fallback.FallbackGenerator`
turns them into a degraded extractive answer.

Example::

    generator = LLMGenerator(OpenAIChat.from_settings(settings), counter, context_window=8192)
    answer = generator.generate("what is BM25?", retrieval)
    answer.text, answer.citations, answer.usage
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ingest.embedding import Embedder
from ingest.settings import Settings

from .attribution import Attributor
from .citations import parse_answer
from .generation import Answer, Citation
from .llm import ChatLLM, Completion, LLMError, Message, StreamEnd
from .prompts import NOT_FOUND, Prompt, build_prompt
from .retrieval import RetrievalResult
from .tokens import TokenCounter


class LLMGenerator:
    """Grounded answers from any :class:`~service.llm.ChatLLM`.

    Args:
        llm: the chat model.
        counter: counts prompt tokens (ideally the model's own tokenizer).
        context_window: the model's context length in tokens.
        reply_tokens: tokens reserved for the reply (sent as ``max_tokens``).
        history_tokens: most tokens of earlier chat turns to keep.
        attributor: cites the sentences of a reply that has no valid citations (optional).
    """

    name = "llm"

    def __init__(
        self,
        llm: ChatLLM,
        counter: TokenCounter,
        *,
        context_window: int = 8192,
        reply_tokens: int = 512,
        history_tokens: int = 1024,
        attributor: Attributor | None = None,
    ) -> None:
        self.llm = llm
        self.attributor = attributor
        self.counter = counter
        self.context_window = context_window
        self.reply_tokens = reply_tokens
        self.history_tokens = history_tokens

    @classmethod
    def from_settings(
        cls, settings: Settings, llm: ChatLLM, counter: TokenCounter, embedder: Embedder
    ) -> LLMGenerator:
        """Budgets from settings; ``embedder`` attributes uncited replies when
        ``attribution_min_similarity`` is set."""
        floor = settings.attribution_min_similarity
        return cls(
            llm,
            counter,
            context_window=settings.llm_context_window,
            reply_tokens=settings.llm_max_tokens,
            history_tokens=settings.history_max_tokens,
            attributor=Attributor(embedder, floor) if floor is not None else None,
        )

    def prompt(
        self,
        query: str,
        retrieval: RetrievalResult,
        history: Sequence[Message] = (),
        instructions: str | None = None,
    ) -> Prompt:
        try:
            return build_prompt(
                query,
                retrieval.chunks,
                self.counter,
                context_window=self.context_window,
                reply_tokens=self.reply_tokens,
                history=history,
                history_tokens=self.history_tokens,
                instructions=instructions,
            )
        except ValueError as exc:
            raise LLMError(str(exc)) from exc

    def not_found(self) -> Answer:
        return Answer(NOT_FOUND, self.name, abstained=True)

    def answer(self, prompt: Prompt, completion: Completion, question: str = "") -> Answer:
        parsed = parse_answer(completion.text, len(prompt.blocks))
        usage = dict(completion.usage)
        usage["prompt_tokens_counted"] = prompt.prompt_tokens
        if "completion_tokens" not in usage:  # e.g. llama.cpp sends no usage when streaming
            usage["completion_tokens_counted"] = self.counter.count(completion.text)
        text, cited, attributed = parsed.text, parsed.cited, False
        if parsed.abstained:
            text, cited = NOT_FOUND, []
        elif not cited and self.attributor is not None:
            text, cited = self.attributor.attribute(text, prompt.blocks, question)
            attributed = bool(cited)
        return Answer(
            text=text,
            generator=self.name,
            citations=[Citation.of(n, prompt.blocks[n - 1]) for n in sorted(cited)],
            abstained=parsed.abstained,
            context=prompt.blocks,
            usage=usage,
            dropped_citations=parsed.dropped,
            model=completion.model,
            citations_attributed=attributed,
        )

    def generate(
        self,
        query: str,
        retrieval: RetrievalResult,
        *,
        history: Sequence[Message] = (),
        instructions: str | None = None,
    ) -> Answer:
        if not retrieval.chunks:
            return self.not_found()
        prompt = self.prompt(query, retrieval, history, instructions)
        completion = self.llm.complete(prompt.messages, max_tokens=self.reply_tokens)
        return self.answer(prompt, completion, query)

    def stream(
        self,
        query: str,
        retrieval: RetrievalResult,
        *,
        history: Sequence[Message] = (),
        instructions: str | None = None,
    ) -> Iterator[str | Answer]:
        """Text deltas as the model writes them, then the checked :class:`Answer`."""
        if not retrieval.chunks:
            answer = self.not_found()
            yield answer.text
            yield answer
            return
        prompt = self.prompt(query, retrieval, history, instructions)
        for item in self.llm.stream(prompt.messages, max_tokens=self.reply_tokens):
            if isinstance(item, StreamEnd):
                yield self.answer(prompt, item.completion, query)
            else:
                yield item
