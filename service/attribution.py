"""Citations for answers whose model wrote none: each sentence is matched to its best block.

Small local models often ignore the ``[n]`` instruction. Rather than return an answer that
cannot be checked, grounded splits it into sentences (pysbd), embeds them with the retrieval
model, and cites the context block most similar to each sentence when the cosine similarity
reaches ``min_similarity``. Sentences that match no block stay uncited, so an answer made up from
outside knowledge stays visibly unsupported. Answers say ``"citations": "attributed"`` when this
ran, so nobody mistakes it for the model's own citing.

Example::

    text, cited = Attributor(embedder).attribute("Paris is in France.", blocks)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np

from ingest.embedding import Embedder

from .prompts import format_block
from .retrieval import RetrievedChunk


class Attributor:
    def __init__(self, embedder: Embedder, min_similarity: float = 0.5) -> None:
        self.embedder = embedder
        self.min_similarity = min_similarity

    @cached_property
    def _segmenter(self):  # type: ignore[no-untyped-def]
        import pysbd

        return pysbd.Segmenter(language="en", clean=False, char_span=True)

    def attribute(self, text: str, blocks: Sequence[RetrievedChunk]) -> tuple[str, list[int]]:
        """``text`` with `` [n]`` after each supported sentence, and the cited numbers."""
        spans = [s for s in self._segmenter.segment(text) if s.sent.strip()]
        if not spans or not blocks:
            return text, []
        sentences = [s.sent.strip() for s in spans]
        block_texts = [format_block(i, c) for i, c in enumerate(blocks, start=1)]
        vectors = self.embedder.embed_documents(sentences + block_texts)
        sims = vectors[: len(sentences)] @ np.asarray(vectors[len(sentences) :]).T
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
