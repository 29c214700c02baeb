"""Routing: pick the source (collection and/or prompt template) a question belongs to.

Routes are described in settings (``[[routes]]`` in grounded.toml: name, description, collection,
prompt, examples; a ``kind = "sql"`` route names a database instead of a collection, and its
``sql_examples`` questions count as examples). Two routers:

* :class:`EmbeddingRouter` (works offline): cosine similarity of the question to each route's
  description and example questions; a route's score is its best match.
* :class:`LLMRouter`: the chat model picks a route name and states its confidence.

Below ``route_min_score`` the answer is "no matching source" instead of a search everywhere.

Example::

    router = EmbeddingRouter(settings.routes, embedder)
    decision = router.route("how do I reset my password?")
    decision.route.name if decision.route else "no matching source", decision.score
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ingest.embedding import Embedder
from ingest.settings import Route

from .llm import ChatLLM

NO_MATCHING_SOURCE = "No matching source for this question."


@dataclass
class RouteDecision:
    route: Route | None  # None: below the confidence floor
    score: float
    router: str
    scores: dict[str, float] = field(default_factory=dict)


class Router(Protocol):
    name: str

    def route(self, question: str) -> RouteDecision: ...


def _decide(
    scores: dict[str, float], routes: Sequence[Route], floor: float, name: str
) -> RouteDecision:
    best = max(scores, key=lambda r: scores[r]) if scores else None
    score = scores.get(best, 0.0) if best else 0.0
    chosen = next((r for r in routes if r.name == best), None) if score >= floor else None
    return RouteDecision(chosen, round(score, 6), name, {k: round(v, 6) for k, v in scores.items()})


class EmbeddingRouter:
    """Nearest route by embedding similarity to its description and examples."""

    name = "embedding"

    def __init__(self, routes: Sequence[Route], embedder: Embedder, min_score: float = 0.3) -> None:
        if not routes:
            raise ValueError("routing needs at least one route")
        self.routes = list(routes)
        self.embedder = embedder
        self.min_score = min_score
        texts: list[str] = []
        self._owner: list[int] = []
        for i, route in enumerate(self.routes):
            sql_questions = [e.question for e in route.sql_examples]
            for text in [route.description, *route.examples, *sql_questions]:
                texts.append(text)
                self._owner.append(i)
        self._vectors = np.asarray(embedder.embed_documents(texts))

    def route(self, question: str) -> RouteDecision:
        sims = self._vectors @ np.asarray(self.embedder.embed_query(question))
        scores: dict[str, float] = {}
        for owner, sim in zip(self._owner, sims, strict=True):
            name = self.routes[owner].name
            scores[name] = max(scores.get(name, -1.0), float(sim))
        return _decide(scores, self.routes, self.min_score, self.name)


LLM_ROUTER_PROMPT = """Choose the source that can answer the question.

Sources:
{sources}

Question: {question}

Reply with JSON only: {{"route": "<source name or none>", "confidence": <0 to 1>}}"""


def parse_route_reply(text: str, names: Sequence[str]) -> tuple[str | None, float]:
    """(route name or None, confidence) from the LLM reply; lenient about the JSON."""
    match = re.search(r"\{.*\}", text, re.DOTALL)
    if match:
        try:
            data = json.loads(match.group(0))
            name = str(data.get("route", "")).strip()
            confidence = float(data.get("confidence", 1.0))
            lookup = {n.lower(): n for n in names}
            return lookup.get(name.lower()), max(0.0, min(1.0, confidence))
        except (ValueError, TypeError, AttributeError):
            pass
    mentioned = [n for n in names if re.search(rf"\b{re.escape(n)}\b", text, re.IGNORECASE)]
    return (mentioned[0], 1.0) if len(mentioned) == 1 else (None, 0.0)


class LLMRouter:
    """The chat model names the route and its confidence."""

    name = "llm"

    def __init__(self, routes: Sequence[Route], llm: ChatLLM, min_score: float = 0.3) -> None:
        if not routes:
            raise ValueError("routing needs at least one route")
        self.routes = list(routes)
        self.llm = llm
        self.min_score = min_score

    def route(self, question: str) -> RouteDecision:
        sources = "\n".join(f"- {r.name}: {r.description}" for r in self.routes)
        reply = self.llm.complete(
            [
                {
                    "role": "user",
                    "content": LLM_ROUTER_PROMPT.format(sources=sources, question=question),
                }
            ],
            max_tokens=48,
        )
        name, confidence = parse_route_reply(reply.text, [r.name for r in self.routes])
        scores = {name: confidence} if name else {}
        return _decide(scores, self.routes, self.min_score, self.name)
