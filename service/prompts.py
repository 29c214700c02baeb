"""The grounded-answer prompt, packed to the model's context budget by counting tokens.

Budget = context window − reply tokens − (rules + question + conversation + per-message
overhead). Context blocks go in by rank while they fit; a block that does not fit is skipped so a
smaller later one can still go in; the first block is cut to fit rather than left out. Blocks are
numbered ``[1]..[n]`` in prompt order, and those numbers are what the model cites.

Example::

    prompt = build_prompt("what is BM25?", chunks, counter, context_window=4096, reply_tokens=512)
    llm.complete(prompt.messages)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .llm import Message
from .retrieval import RetrievedChunk
from .tokens import TokenCounter

NOT_FOUND = "I could not find the answer in the documents."

RULES = f"""You answer questions using only the numbered context passages below.
Rules:
- Use only facts stated in the context passages. Do not add outside knowledge.
- After each sentence, cite the passages it relies on as [n], e.g. [1] or [2][3]. Only cite \
passage numbers that appear in the context.
- If the passages do not contain the answer, reply exactly: {NOT_FOUND}
- Answer concisely, in the language of the question."""

# Chat templates wrap every message in role markers; 8 tokens covers the common templates.
MESSAGE_OVERHEAD = 8


@dataclass
class Prompt:
    messages: list[Message]
    blocks: list[RetrievedChunk]  # blocks[n - 1] is context block [n]
    prompt_tokens: int  # as counted by the configured tokenizer


def format_block(number: int, chunk: RetrievedChunk) -> str:
    heading = " > ".join(h for h in [chunk.title, *chunk.headings] if h)
    return f"[{number}] {heading}\n{chunk.text}" if heading else f"[{number}] {chunk.text}"


def _trim_history(
    history: Sequence[Message], counter: TokenCounter, budget: int
) -> tuple[list[Message], int]:
    """The most recent turns that fit ``budget`` tokens, in their original order."""
    kept: list[Message] = []
    used = 0
    for message in reversed(history):
        cost = counter.count(message["content"]) + MESSAGE_OVERHEAD
        if used + cost > budget:
            break
        kept.append(message)
        used += cost
    return kept[::-1], used


def build_prompt(
    question: str,
    chunks: Sequence[RetrievedChunk],
    counter: TokenCounter,
    *,
    context_window: int,
    reply_tokens: int,
    history: Sequence[Message] = (),
    history_tokens: int = 1024,
    instructions: str | None = None,
) -> Prompt:
    """Rules + context blocks in the system message, earlier turns, then the question.

    Raises:
        ValueError: when the rules and the question alone leave no room for any context.
    """
    rules = (
        RULES if not instructions else f"{RULES}\n\nInstructions for this source:\n{instructions}"
    )
    header = f"{rules}\n\nContext passages:\n"
    fixed = counter.count(header) + counter.count(question) + 2 * MESSAGE_OVERHEAD
    turns, turn_tokens = _trim_history(history, counter, min(history_tokens, context_window // 4))
    budget = context_window - reply_tokens - fixed - turn_tokens
    if budget < 32:
        raise ValueError(
            f"no room for context: window {context_window}, reply {reply_tokens}, "
            f"rules + question + history {fixed + turn_tokens} tokens"
        )
    blocks: list[RetrievedChunk] = []
    texts: list[str] = []
    used = 0
    for chunk in chunks:
        text = format_block(len(blocks) + 1, chunk)
        cost = counter.count(text) + 1  # the blank line between blocks
        if used + cost > budget:
            if blocks:
                continue
            text = counter.truncate(text, budget - 1)
            cost = counter.count(text) + 1
            if not text or cost > budget:
                continue
        blocks.append(chunk)
        texts.append(text)
        used += cost
    system = header + "\n\n".join(texts)
    messages: list[Message] = [{"role": "system", "content": system}]
    messages.extend({"role": m["role"], "content": m["content"]} for m in turns)
    messages.append({"role": "user", "content": question})
    return Prompt(messages, blocks, fixed + turn_tokens + used)
