"""A scripted ragas judge: well-formed answers to ragas' prompts, for :class:`FakeLLM`.

ragas renders each prompt as its instruction, an output schema, examples, and then
``input: {json}`` and ``Output: ``. :func:`judge_reply` reads the instruction and that input and
answers in the prompt's output schema with a rule a reader can check by eye: a statement is
supported by a context when every word of four letters or more in it occurs in the context.

- faithfulness: the answer's sentences are its statements; each is judged by the rule;
- answer relevancy: the question "generated" for an answer is the answer itself, as a question
  (so an answer about something else is far, in embedding space, from the real question);
- context precision: the context is useful when it supports the reference answer;
- context recall: each sentence of the reference is attributed when the context supports it.

A prompt it does not know gets a reply that is not JSON (which ragas scores as NaN).

Example::

    with FakeLLM(judge_reply) as llm:
        RagasJudge(JudgeConfig(llm.url, "fake-model"), embedder)(records, items)
"""

from __future__ import annotations

import json
import re
from typing import Any

from support.fake_llm import prompt_text

_INPUT = "Now perform the same with the following input\ninput: "
_OUTPUT = "\nOutput:"


def words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) >= 4}


def supports(context: str, statement: str) -> bool:
    return words(statement) <= words(context)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


def ragas_prompt(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The text before the input (instruction, schema, examples) and the input, of the ragas
    prompt in a chat request."""
    head, found, tail = prompt_text(body).rpartition(_INPUT)
    payload, end, _ = tail.rpartition(_OUTPUT)
    if not found or not end:
        raise ValueError("not a ragas prompt")
    return head, json.loads(payload)


def _asks(prompt: str, instruction: str) -> bool:
    return prompt.lstrip().startswith(instruction)


def _answer(prompt: str, data: dict[str, Any]) -> dict[str, Any]:
    if _asks(prompt, "Given a question and an answer, analyze the complexity"):
        return {"statements": sentences(data["answer"])}
    if _asks(prompt, "Your task is to judge the faithfulness"):
        verdicts = [
            {"statement": s, "reason": "word check", "verdict": int(supports(data["context"], s))}
            for s in data["statements"]
        ]
        return {"statements": verdicts}
    if _asks(prompt, "Generate a question for the given answer"):
        return {"question": data["response"].rstrip(".") + "?", "noncommittal": 0}
    if _asks(prompt, "Given question, answer and context verify if the context"):
        return {
            "reason": "word check",
            "verdict": int(supports(data["context"], data["answer"])),
        }
    if _asks(prompt, "Given a context, and an answer, analyze each sentence"):
        classified = [
            {
                "statement": s,
                "reason": "word check",
                "attributed": int(supports(data["context"], s)),
            }
            for s in sentences(data["answer"])
        ]
        return {"classifications": classified}
    raise ValueError(f"unknown ragas prompt: {prompt.lstrip()[:80]!r}")


def judge_reply(body: dict[str, Any]) -> str:
    """A :data:`support.fake_llm.Reply`: the scripted judge's answer to one chat request."""
    try:
        prompt, data = ragas_prompt(body)
        return json.dumps(_answer(prompt, data))
    except (ValueError, KeyError) as exc:
        return f"The scripted judge cannot answer this ({exc})."
