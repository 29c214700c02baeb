"""Few-shot question → SQL examples, retrieved by similarity.

Each example's question and SQL are embedded once (in memory: a pool is hundreds to a few
thousand pairs). An example is retrieved two ways: by how close its question is to the asked
one, and by how close its SQL is to a *hypothetical* SQL drafted for the asked question first —
two questions worded apart can need the same query shape, which the draft exposes. The two
rankings are interleaved (question first), duplicates dropped.

Example::

    store = FewShotStore([SqlPair("How many singers are there?", "SELECT count(*) FROM singer")],
                         embedder)
    store.search("How many pets are there?", k=4)
    store.search("How many pets are there?", k=4, draft_sql="SELECT count(*) FROM pets")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ingest.embedding import Embedder


@dataclass(frozen=True)
class SqlPair:
    question: str
    sql: str
    group: str | None = None  # e.g. the database an example is about; searches can exclude it


class FewShotStore:
    """An in-memory pool of :class:`SqlPair` with question and SQL embeddings.

    Args:
        pairs: the pool; may be empty (searches then return nothing).
        embedder: embeds questions and SQL text alike (normalised vectors, cosine = dot).
    """

    def __init__(self, pairs: Sequence[SqlPair], embedder: Embedder) -> None:
        self.pairs = list(pairs)
        self.embedder = embedder
        if self.pairs:
            self._questions = np.asarray(embedder.embed_documents([p.question for p in pairs]))
            self._sqls = np.asarray(embedder.embed_documents([p.sql for p in pairs]))
        self._groups = np.asarray([p.group or "" for p in self.pairs], dtype=object)

    def __len__(self) -> int:
        return len(self.pairs)

    def search(
        self,
        question: str,
        k: int,
        *,
        draft_sql: str | None = None,
        exclude_group: str | None = None,
    ) -> list[SqlPair]:
        """Up to ``k`` examples: by question similarity, interleaved with SQL similarity to
        ``draft_sql`` when one is given; examples of ``exclude_group`` never (cross-database
        evaluation: no example from the database being asked)."""
        if k <= 0 or not self.pairs:
            return []
        allowed = self._groups != (exclude_group or "") if exclude_group else None
        rankings = [self._rank(self._questions, self.embedder.embed_query(question), allowed)]
        if draft_sql:
            draft = self.embedder.embed_documents([draft_sql])[0]
            rankings.append(self._rank(self._sqls, draft, allowed))
        chosen: list[int] = []
        for position in range(len(self.pairs)):
            for ranking in rankings:
                if position < len(ranking) and ranking[position] not in chosen:
                    chosen.append(int(ranking[position]))
                if len(chosen) == k:
                    return [self.pairs[i] for i in chosen]
        return [self.pairs[i] for i in chosen]

    @staticmethod
    def _rank(
        vectors: np.ndarray, query: Sequence[float] | np.ndarray, allowed: np.ndarray | None
    ) -> list[int]:
        sims = vectors @ np.asarray(query)
        order = np.argsort(-sims, kind="stable")
        if allowed is not None:
            order = order[allowed[order]]
        return [int(i) for i in order]
