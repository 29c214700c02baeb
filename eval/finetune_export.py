"""``grounded export finetune --format openai``: chat-format JSONL for OpenAI fine-tuning.

Each line is one example, ``{"messages": [system, user, assistant]}``, built with the service's
own prompt builder (:func:`service.prompts.build_prompt`), so a model fine-tuned on the file sees
at training time exactly what grounded sends it at answer time: the system message holds the
grounding rules and the numbered, fenced context blocks (the service puts them there, not in the
user turn), the user message the question, and the assistant message the accepted answer with its
``[n]`` citations renumbered to the blocks of that prompt.

Sources:

- an answers run: the questions of an answers suite (SQuAD/XQuAD JSON, or JSONL with a corpus)
  answered by the pipeline as ``grounded eval answers`` does; an answer is *accepted* when it is
  not an abstention, cites at least one block, and (where the item has reference answers)
  contains a reference answer or reaches token F1 >= ``min_f1``, or (where it has none) the
  hallucination detector finds no unsupported sentence;
- a JSONL of ``{"question", "answer"[, "contexts"]}``: contexts retrieved with grounded when
  absent; an answer without ``[n]`` markers cites the block that contains it (or shares most of
  its words), and is skipped when no block does.

:func:`validate_chat_jsonl` checks a file against OpenAI's documented chat format (valid JSON per
line, known roles, an optional system message first, then user/assistant turns alternating and
ending with the assistant, no empty content) and counts tokens.

Example::

    stats = export_openai(examples_from_suite(pipeline, suite, collection), Path("ft.jsonl"))
    report = validate_chat_jsonl(Path("ft.jsonl"), token_counter(pipeline.counter))
    report.ok, report.examples, report.total_tokens
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.citations import parse_answer
from service.llm import Message
from service.pipeline import RagPipeline
from service.prompts import build_prompt
from service.retrieval import RetrievedChunk, SearchParams
from service.tokens import TokenCounter

from .answers import AnswerSuite, exact_match, normalize_answer, token_f1
from .hallucination import HallucinationDetector

ROLES = ("system", "user", "assistant")
# Keys OpenAI's chat fine-tuning format allows on a message besides role and content.
OPTIONAL_KEYS = {"name", "weight"}
# The training-example limit of OpenAI's gpt-4o-mini fine-tuning (tokens); --context-limit.
DEFAULT_CONTEXT_LIMIT = 65_536
_MARKER = re.compile(r"\[(\d+)\]")

# An example or the reason it was skipped.
Built = tuple[str, list[Message] | None, str]


def chat_example(
    question: str,
    context: Sequence[RetrievedChunk],
    answer: str,
    counter: TokenCounter,
    *,
    context_window: int,
    reply_tokens: int,
) -> tuple[list[Message] | None, str]:
    """The service's prompt for ``question`` over ``context``, and the answer as the assistant
    turn with its citations renumbered to the prompt's blocks; ``(None, reason)`` to skip.

    ``answer`` cites ``[n]`` = ``context[n - 1]``; the prompt may leave blocks out (the token
    budget), so every cited block must have made it in."""
    parsed = parse_answer(answer, len(context))
    if parsed.abstained:
        return None, "abstained"
    if not parsed.cited:
        return None, "no citation"
    try:
        prompt = build_prompt(
            question, context, counter, context_window=context_window, reply_tokens=reply_tokens
        )
    except ValueError:
        return None, "question too long for the context window"
    position = {c.id: i for i, c in enumerate(prompt.blocks, start=1)}
    numbers: dict[int, int] = {}
    for n in parsed.cited:
        new = position.get(context[n - 1].id)
        if new is None:
            return None, "a cited block did not fit the prompt"
        numbers[n] = new
    text = _MARKER.sub(lambda m: f"[{numbers[int(m.group(1))]}]", parsed.text)
    return [*prompt.messages, {"role": "assistant", "content": text}], ""


def accepted(
    answer: str,
    references: Sequence[str],
    *,
    min_f1: float,
    unsupported_rate: Callable[[], float] | None = None,
) -> tuple[bool, str]:
    """The acceptance rule for an answers run (module docstring); ``answer`` without markers."""
    if references:
        contains = any(normalize_answer(r) in normalize_answer(answer) for r in references if r)
        if contains or exact_match(answer, references) or token_f1(answer, references) >= min_f1:
            return True, ""
        return False, "does not match a reference answer"
    if unsupported_rate is not None and unsupported_rate() > 0:
        return False, "the hallucination detector found an unsupported sentence"
    return True, ""


def examples_from_suite(
    pipeline: RagPipeline,
    suite: AnswerSuite,
    collection: str,
    *,
    top_k: int = 5,
    min_f1: float = 0.5,
    detector: HallucinationDetector | None = None,
    tick: Callable[[int], None] | None = None,
) -> Iterator[Built]:
    """Answer each question with the pipeline; yield accepted answers as examples."""
    s = pipeline.settings
    for item in suite.items:
        result = pipeline.query(SearchParams(item.question, collection=collection, top_k=top_k))
        if tick:
            tick(1)
        answer = result.answer
        if answer.abstained:
            yield item.id, None, "abstained"
            continue
        if answer.degraded:
            yield item.id, None, "the LLM failed (degraded answer)"
            continue
        context = answer.context or result.retrieval.chunks
        plain = _MARKER.sub("", answer.text).strip()

        def unsupported(
            question: str = item.question,
            text: str = plain,
            ctx: Sequence[RetrievedChunk] = context,
        ) -> float:
            assert detector is not None
            return detector.check(question, text, "\n".join(c.text for c in ctx)).unsupported_rate

        ok, reason = accepted(
            plain,
            item.answers,
            min_f1=min_f1,
            unsupported_rate=unsupported if detector is not None else None,
        )
        if not ok:
            yield item.id, None, reason
            continue
        messages, reason = chat_example(
            item.question,
            context,
            answer.text,
            pipeline.counter,
            context_window=s.llm_context_window,
            reply_tokens=s.llm_max_tokens,
        )
        yield item.id, messages, reason


def _chunk(number: int, text: str) -> RetrievedChunk:
    return RetrievedChunk(
        number, 1.0, f"ctx-{number}", f"ctx-{number}", 0, "", text, "", 0, len(text)
    )


def cite_supporting(answer: str, context: Sequence[RetrievedChunk]) -> str | None:
    """``answer`` with a citation of the block that contains it (or shares most of its words,
    at least half of them), or None when no block supports it."""
    norm = normalize_answer(answer)
    for i, c in enumerate(context, start=1):
        if norm and norm in normalize_answer(c.text):
            return f"{answer.rstrip()} [{i}]"
    words = set(norm.split())
    if not words:
        return None
    overlap = [len(words & set(normalize_answer(c.text).split())) for c in context]
    best = max(range(len(context)), key=lambda i: overlap[i], default=None)
    if best is None or overlap[best] < len(words) / 2:
        return None
    return f"{answer.rstrip()} [{best + 1}]"


def load_qa_pairs(path: Path) -> list[dict[str, Any]]:
    """JSON Lines of ``{"question", "answer"[, "id", "contexts"]}``; clear errors on bad lines."""
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            question, answer = str(record["question"]), str(record["answer"])
            contexts = record.get("contexts")
            if contexts is not None and (
                not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts)
            ):
                raise TypeError("contexts must be a list of strings")
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{path}:{number}: each line needs a JSON object with question and answer "
                f"(and optionally contexts: a list of strings): {exc}"
            ) from None
        rows.append(
            {
                "id": str(record.get("id", number)),
                "question": question,
                "answer": answer,
                "contexts": contexts,
            }
        )
    return rows


def examples_from_pairs(
    pipeline: RagPipeline,
    rows: Iterable[dict[str, Any]],
    collection: str | None,
    *,
    top_k: int = 5,
) -> Iterator[Built]:
    """Examples from question/answer pairs; contexts retrieved from ``collection`` when a row
    has none."""
    s = pipeline.settings
    for row in rows:
        if not row["question"].strip() or not row["answer"].strip():
            yield row["id"], None, "empty question or answer"
            continue
        if row["contexts"]:
            context = [_chunk(i, t) for i, t in enumerate(row["contexts"], start=1) if t.strip()]
        elif collection:
            params = SearchParams(row["question"], collection=collection, top_k=top_k)
            context = pipeline.search(params).chunks
        else:
            raise ValueError("a row has no contexts: pass --collection to retrieve them")
        answer = row["answer"]
        if not _MARKER.search(answer):
            cited = cite_supporting(answer, context)
            if cited is None:
                yield row["id"], None, "no context block supports the answer"
                continue
            answer = cited
        messages, reason = chat_example(
            row["question"],
            context,
            answer,
            pipeline.counter,
            context_window=s.llm_context_window,
            reply_tokens=s.llm_max_tokens,
        )
        yield row["id"], messages, reason


@dataclass
class ExportStats:
    considered: int = 0
    written: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "considered": self.considered,
            "written": self.written,
            "skipped": dict(self.skipped.most_common()),
        }


def export_openai(examples: Iterable[Built], out: Path) -> ExportStats:
    """Write the examples as chat JSONL (one ``{"messages": [...]}`` per line)."""
    stats = ExportStats()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for _id, messages, reason in examples:
            stats.considered += 1
            if messages is None:
                stats.skipped[reason] += 1
                continue
            fh.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
            stats.written += 1
    return stats


# Validation -------------------------------------------------------------------------------------
def check_messages(messages: Any) -> list[str]:
    """What is wrong with one example's ``messages`` under OpenAI's chat format (empty: valid)."""
    if not isinstance(messages, list) or not messages:
        return ["messages must be a non-empty list"]
    problems: list[str] = []
    roles: list[str] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            problems.append(f"message {i} is not an object")
            continue
        extra = set(m) - {"role", "content"} - OPTIONAL_KEYS
        if extra:
            problems.append(f"message {i} has unknown keys {sorted(extra)}")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            problems.append(f"message {i} has role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str) or not content.strip():
            problems.append(f"message {i} ({role}) has empty or non-text content")
        roles.append(str(role))
    turns = roles[1:] if roles and roles[0] == "system" else roles
    if "system" in turns:
        problems.append("a system message may only come first")
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(turns))]
    if turns != expected and "system" not in turns:
        problems.append(f"after the system message, turns must alternate user/assistant: {turns}")
    if not turns or turns[-1] != "assistant":
        problems.append("the last message must be the assistant's (the training target)")
    return problems


@dataclass
class ValidationReport:
    examples: int = 0
    errors: list[str] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    over_limit: int = 0
    context_limit: int = DEFAULT_CONTEXT_LIMIT
    counter: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors and self.examples > 0

    def to_dict(self) -> dict[str, Any]:
        n = len(self.tokens)
        return {
            "ok": self.ok,
            "examples": self.examples,
            "errors": self.errors[:20],
            "error_count": len(self.errors),
            "tokens": {
                "counter": self.counter,
                "total": sum(self.tokens),
                "mean": round(sum(self.tokens) / n, 1) if n else 0,
                "max": max(self.tokens, default=0),
            },
            "context_limit": self.context_limit,
            "over_limit": self.over_limit,
        }


TokenCount = tuple[str, Callable[[str], int]]


def token_counter(fallback: TokenCounter) -> TokenCount:
    """tiktoken's ``o200k_base`` (GPT-4o's encoding) when it loads, else ``fallback`` (the
    project's counter; tiktoken fetches its encoding file from the internet on first use)."""
    try:
        import tiktoken

        encoding = tiktoken.get_encoding("o200k_base")
        return "tiktoken o200k_base", lambda text: len(encoding.encode(text))
    except Exception:  # not installed, or no network for its encoding file
        return f"{fallback.name} (project counter; tiktoken unavailable)", fallback.count


def example_tokens(messages: list[dict[str, Any]], count: Callable[[str], int]) -> int:
    """OpenAI's chat accounting: 3 tokens per message, its content, 1 per name, 3 to prime."""
    return 3 + sum(
        3 + count(str(m.get("content", ""))) + (1 if m.get("name") else 0) for m in messages
    )


def validate_chat_jsonl(
    path: Path, counter: TokenCount, context_limit: int = DEFAULT_CONTEXT_LIMIT
) -> ValidationReport:
    """Check every line of a chat fine-tuning file; count tokens of the valid examples."""
    name, count = counter
    report = ValidationReport(context_limit=context_limit, counter=name)
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            report.errors.append(f"line {number}: empty line")
            continue
        report.examples += 1
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            report.errors.append(f"line {number}: not JSON ({exc})")
            continue
        if not isinstance(record, dict) or "messages" not in record:
            report.errors.append(f'line {number}: needs an object with "messages"')
            continue
        problems = check_messages(record["messages"])
        report.errors.extend(f"line {number}: {p}" for p in problems)
        if not problems:
            tokens = example_tokens(record["messages"], count)
            report.tokens.append(tokens)
            report.over_limit += tokens > context_limit
    return report
