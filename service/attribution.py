"""Citations for answers whose model wrote none: each sentence is matched to its best block.

Small local models often ignore the ``[n]`` instruction. Rather than return an answer that
cannot be checked, grounded splits it into sentences (:mod:`ingest.sentences`) and scores each
against every context block (:func:`service.prompts.format_block`) in two ways: cosine similarity
of their embeddings (the retrieval model), and the share of the sentence's content words and
numbers, those not already in the question, that the block contains (short answers such as
"25 to 150 Hz" embed poorly but match exactly). The best block is cited when either score reaches
``min_similarity``. Sentences that match no block stay uncited, so an answer made up from outside
knowledge stays visibly unsupported. Answers say ``"citations_attributed": true`` when this ran,
so nobody mistakes it for the model's citing.

Example::

    text, cited = Attributor(embedder).attribute("Paris is in France.", blocks)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from ingest.embedding import Embedder
from ingest.sentences import sentence_spans

from .prompts import format_block
from .retrieval import RetrievedChunk


class Attributor:
    def __init__(self, embedder: Embedder, min_similarity: float = 0.5) -> None:
        self.embedder = embedder
        self.min_similarity = min_similarity

    def attribute(
        self, text: str, blocks: Sequence[RetrievedChunk], question: str = ""
    ) -> tuple[str, list[int]]:
        """``text`` with `` [n]`` after each supported sentence, and the cited numbers."""
        spans = [s for s in sentence_spans(text) if s.sent.strip()]
        if not spans or not blocks:
            return text, []
        sentences = [s.sent.strip() for s in spans]
        block_texts = [format_block(i, c) for i, c in enumerate(blocks, start=1)]
        vectors = self.embedder.embed_documents(sentences + block_texts)
        sims = vectors[: len(sentences)] @ np.asarray(vectors[len(sentences) :]).T
        asked = _terms(question)
        block_terms = [_terms(t) for t in block_texts]
        for i, sentence in enumerate(sentences):
            new = _terms(sentence) - asked
            if len(new) >= 2:
                overlap = [len(new & terms) / len(new) for terms in block_terms]
                sims[i] = np.maximum(sims[i], overlap)
        out: list[str] = []
        cited: list[int] = []
        cursor = 0
        for span, row in zip(spans, sims, strict=True):
            best = int(np.argmax(row))
            end = span.start + len(span.sent.rstrip())
            if end > cursor and text[end - 1] in ".!?":
                end -= 1  # the citation goes before the full stop
            out.append(text[cursor:end])
            cursor = end
            if float(row[best]) >= self.min_similarity:
                out.append(f" [{best + 1}]")
                if best + 1 not in cited:
                    cited.append(best + 1)
        out.append(text[cursor:])
        return "".join(out), cited


def _terms(text: str) -> set[str]:
    words = re.findall(r"[a-z0-9]+(?:[.,][0-9]+)?", text.lower())
    return {w for w in words if w not in ENGLISH_STOP_WORDS and (len(w) > 2 or w.isdigit())}
