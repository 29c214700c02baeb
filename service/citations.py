"""Reading an LLM answer: ``[n]`` citations resolved to context blocks, and abstentions.

Citations come as ``[1]``, ``[1][2]``, ``[1, 3]`` or ``[1-2]``. A number that names no context
block is removed from the text and reported, never resolved to a wrong chunk.

The same pattern decides what counts as a marker in *document* text: :func:`neutralise_markers`
rewrites ``[3]`` as ``(3)`` in retrieved text before it reaches a prompt or an extractive answer,
so a document cannot plant citations that would be read as grounded's own.

Example::

    parsed = parse_answer("BM25 ranks documents [1][7].", n_blocks=3)
    parsed.cited      # [1]
    parsed.dropped    # [7]
    parsed.text       # "BM25 ranks documents [1]."
    neutralise_markers("as shown in [1, 2]")   # "as shown in (1, 2)"
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The reply the prompt asks for when the passages lack the answer. It lives here, not in
# prompts.py, because prompts.py needs neutralise_markers: this module imports nothing of ours,
# so there is no import cycle. prompts.py re-exports it (``from service.prompts import NOT_FOUND``).
NOT_FOUND = "I could not find the answer in the documents."

_CITATION = re.compile(r"\[(\s*\d+(?:\s*(?:,|-|–)\s*\d+)*\s*)\]")
# Ways models say "the context does not have it" when they do not use the exact phrase.
_ABSTAIN = re.compile(
    r"(could not|couldn't|cannot|can't|unable to) find (the|an|any) answer"
    r"|not (found|present|mentioned|stated|provided|contained) in the (documents|context|passages)"
    r"|(documents|context|passages) (do|does) not (contain|mention|provide|say|include)"
    r"|no (relevant )?information (about|on|regarding)",
    re.IGNORECASE,
)


@dataclass
class ParsedAnswer:
    text: str
    cited: list[int]  # valid block numbers in order of first use
    dropped: list[int]  # numbers that named no block
    abstained: bool


def neutralise_markers(text: str) -> str:
    """``text`` with every citation-like ``[n]``, ``[1, 2]``, ``[1-3]`` written as ``(n)`` etc.

    For text that came from documents: only grounded may put ``[n]`` into a prompt's labels or an
    answer, so a marker copied from a document can never pass for a citation.
    """
    return _CITATION.sub(lambda m: f"({m.group(1)})", text)


def _numbers(group: str) -> list[int]:
    numbers: list[int] = []
    for part in re.split(r"\s*,\s*", group.strip()):
        bounds = re.split(r"\s*[-–]\s*", part)
        if len(bounds) == 2:
            lo, hi = int(bounds[0]), int(bounds[1])
            numbers.extend(range(lo, hi + 1) if 0 < hi - lo < 20 else (lo, hi))
        else:
            numbers.append(int(bounds[0]))
    return numbers


def parse_answer(text: str, n_blocks: int) -> ParsedAnswer:
    cited: list[int] = []
    dropped: list[int] = []

    def rewrite(match: re.Match[str]) -> str:
        valid = []
        for n in _numbers(match.group(1)):
            if 1 <= n <= n_blocks:
                valid.append(n)
                if n not in cited:
                    cited.append(n)
            elif n not in dropped:
                dropped.append(n)
        return "".join(f"[{n}]" for n in dict.fromkeys(valid))

    cleaned = _CITATION.sub(rewrite, text)
    cleaned = re.sub(r"[ \t]+([.,;:!?])", r"\1", cleaned)
    cleaned = re.sub(r"[ \t]{2,}", " ", cleaned).strip()
    abstained = is_abstention(cleaned, has_citations=bool(cited))
    return ParsedAnswer(cleaned, cited, dropped, abstained)


def is_abstention(text: str, *, has_citations: bool) -> bool:
    """The exact NOT_FOUND reply, or an uncited answer that says the context lacks the answer."""
    if NOT_FOUND.lower().rstrip(".") in text.lower():
        return not has_citations or len(text) < len(NOT_FOUND) + 20
    return not has_citations and bool(_ABSTAIN.search(text))
