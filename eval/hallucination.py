"""An offline hallucination detector: is each claim of an answer supported by its context?

No judge model. An answer is split into claims (sentences, by :mod:`ingest.sentences`, the
splitter the service uses); each claim gets a support score in [0, 1] from four signals:

- **lexical**: share of the claim's content terms that the question did not already give and
  that appear in the context (BM25's tokenizer: stopwords out, Snowball stems);
- **entities**: share of the claim's proper names found in the context;
- **numbers**: share of the claim's numbers and dates found in the context;
- **semantic**: best cosine similarity between the claim and a context sentence (MiniLM).

The weighted sum is scaled by the share of names and numbers found (a wrong name or number is hard
evidence that topical similarity must not outvote). A claim with support below ``threshold`` is
unsupported; an answer's hallucination score is
``1 - min(claim support)`` and its unsupported-claim rate the share of unsupported claims. The
weights are set by hand, not fitted to a benchmark; ``grounded eval detector`` measures how well
they do on held-out labelled data.

Example::

    detector = HallucinationDetector(embedder)
    verdict = detector.check("Where is the head office?", "It is in Mumbai.", context)
    verdict.score, verdict.unsupported_rate
"""

from __future__ import annotations

import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

import numpy as np
import qdrant_edge

from ingest.embedding import Embedder
from ingest.sentences import sentences

WEIGHTS = {"lexical": 0.4, "entities": 0.25, "numbers": 0.15, "semantic": 0.2}

_NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?")
_NAME = re.compile(r"\b[A-Z][\w'’-]*(?:\s+(?:of|the|de|van|von|and|&)?\s*[A-Z][\w'’-]*)*")
_LEADING_STOP = {
    "The",
    "A",
    "An",
    "It",
    "This",
    "That",
    "These",
    "Those",
    "He",
    "She",
    "They",
    "His",
    "Her",
    "Its",
    "Their",
    "In",
    "On",
    "At",
    "Yes",
    "No",
    "However",
    "But",
}


@dataclass(frozen=True)
class ClaimSupport:
    claim: str
    support: float
    signals: dict[str, float]


@dataclass
class Verdict:
    claims: list[ClaimSupport] = field(default_factory=list)
    threshold: float = 0.5

    @property
    def score(self) -> float:
        """Hallucination score: 1 - the weakest claim's support (0 when there are no claims)."""
        return 1.0 - min((c.support for c in self.claims), default=1.0)

    @property
    def unsupported_rate(self) -> float:
        if not self.claims:
            return 0.0
        return sum(c.support < self.threshold for c in self.claims) / len(self.claims)


def _numbers(text: str) -> set[str]:
    return {n.replace(",", "").lstrip("+") for n in _NUMBER.findall(text)}


def _names(text: str) -> set[str]:
    names = set()
    for match in _NAME.finditer(text):
        words = match.group(0).split()
        while words and words[0] in _LEADING_STOP:
            words = words[1:]
        if words:
            names.add(" ".join(words).lower())
    return names


def _share(found: AbstractSet[object], wanted: AbstractSet[object]) -> float:
    return len(found & wanted) / len(wanted) if wanted else 1.0


class HallucinationDetector:
    """Scores each claim of an answer for support in the given context.

    Args:
        embedder: sentence embedder for the semantic signal.
        threshold: claims below this support are unsupported.
        weights: signal weights (default :data:`WEIGHTS`).
    """

    def __init__(
        self, embedder: Embedder, threshold: float = 0.5, weights: dict[str, float] | None = None
    ) -> None:
        if not 0 < threshold < 1:
            raise ValueError("threshold must be in (0, 1)")
        self.embedder = embedder
        self.threshold = threshold
        self.weights = weights or WEIGHTS
        total = sum(self.weights.values())
        self.weights = {k: v / total for k, v in self.weights.items()}
        self._terms = qdrant_edge.Bm25(qdrant_edge.Bm25Config(language="english"))

    def _term_set(self, text: str) -> set[int]:
        return set(self._terms.embed_query(text).indices)

    def claims(self, answer: str) -> list[str]:
        return [s.strip() for s in sentences(answer) if re.search(r"\w", s)]

    def check(self, question: str, answer: str, context: str) -> Verdict:
        return self.check_many([(question, answer, context)])[0]

    def check_many(self, items: list[tuple[str, str, str]]) -> list[Verdict]:
        """Batched: one embedding call for all claims and all context sentences."""
        prepared = []
        texts: list[str] = []
        for question, answer, context in items:
            claims = self.claims(answer)
            ctx_sentences = [s for s in sentences(context) if s.strip()] or [context]
            prepared.append((question, context, claims, len(texts), len(ctx_sentences)))
            texts.extend(ctx_sentences)
            texts.extend(claims)
        vectors = self.embedder.embed_documents(texts) if texts else np.zeros((0, 1))
        verdicts = []
        for question, context, claims, start, n_sent in prepared:
            ctx_vecs = vectors[start : start + n_sent]
            claim_vecs = vectors[start + n_sent : start + n_sent + len(claims)]
            given = self._term_set(question)
            ctx_terms = self._term_set(context)
            ctx_lower = context.lower()
            ctx_numbers = _numbers(context)
            verdict = Verdict(threshold=self.threshold)
            for claim, vec in zip(claims, claim_vecs, strict=True):
                novel = self._term_set(claim) - given
                names = _names(claim) - {n for n in _names(question) if n in ctx_lower}
                signals = {
                    "lexical": _share(ctx_terms, novel),
                    "entities": sum(n in ctx_lower for n in names) / len(names) if names else 1.0,
                    "numbers": _share(ctx_numbers, _numbers(claim)),
                    "semantic": float(max(0.0, (ctx_vecs @ vec).max())) if len(ctx_vecs) else 0.0,
                }
                # A name or number missing from the context is hard evidence: topical
                # similarity must not outvote it.
                hard = min(signals["entities"], signals["numbers"])
                support = hard * sum(self.weights[k] * v for k, v in signals.items())
                verdict.claims.append(ClaimSupport(claim, round(support, 4), signals))
            verdicts.append(verdict)
        return verdicts
