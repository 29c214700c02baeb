"""How far the similarity-floor abstention can be trusted (``grounded eval abstention``).

The floor (``abstain_min_similarity``, applied in ``RagPipeline._prepare_answer``) abstains when
no retrieved chunk reaches a cosine similarity to the question. Two errors follow from a floor
(the rule weighs them), and a third case is reported beside them:

- **false abstention**: a question whose answer *is* in the corpus is refused — every query of
  a BEIR set asked against its own corpus (each has a judged relevant document there);
- **false answer**: a question whose answer is *not* in the corpus is answered — the same
  queries asked against *another* set's corpus (a SciFact claim against Wikipedia paragraphs).
- **false answer, on topic** (reported, not part of the rule): the same queries against their
  own corpus with their judged documents taken out — the answer is missing but the topic is
  there, the hard case for a similarity floor. The judged documents' chunks are dropped from a
  deeper result list (``top_k`` + :data:`REMOVED_MARGIN`), and the best similarity is read among
  the ``top_k`` chunks left: the ranking a search of a corpus without them would give, up to
  DBSF's normalisation and BM25's corpus statistics (IDF, average length), which still count
  them.

All three depend on one number per (question, corpus): the best similarity among the chunks a
default request retrieves (``top_k`` chunks, default mode and fusion), which is what the pipeline
compares with the floor. It is measured once, and every floor of the curve is read off it.

Rates are macro-averaged: false abstention over the sets, false answer over the (questions,
other corpus) pairs, so the biggest set does not decide the floor alone.

The rule for the default floor (:func:`choose_floor`): on dev splits, the floor that minimises
false-abstention + false-answer rate (both errors weigh the same; Youden's J), the lowest such
floor on a tie, so as to abstain no more than needed.

Example::

    sims = best_similarities(pipeline, dataset.queries, collection)
    rates(answerable={"set": sims}, unanswerable={}, floors=[0.3])
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.pipeline import RagPipeline
from service.retrieval import SearchParams

from .datasets import BeirDataset
from .retrieval import Tick, prepare_index, query_vectors

# No chunk at all (an empty collection, a query of stopwords): the pipeline abstains whatever
# the floor, so it counts as below every floor.
NO_SIMILARITY = float("-inf")
# Extra chunks retrieved when a query's judged documents are dropped: more than the chunks of a
# few judged documents, so top_k remain.
REMOVED_MARGIN = 30


def default_floors(start: float = 0.0, stop: float = 0.8, step: float = 0.025) -> list[float]:
    count = round((stop - start) / step)
    return [round(start + i * step, 4) for i in range(count + 1)]


def best_similarities(
    pipeline: RagPipeline,
    queries: Mapping[str, str],
    collection: str,
    vectors: Mapping[str, np.ndarray] | None = None,
    top_k: int | None = None,
    tick: Tick | None = None,
    removed: Mapping[str, Collection[str]] | None = None,
) -> dict[str, float]:
    """``{query_id: best cosine similarity}`` among the chunks a default request retrieves.

    ``vectors``: the queries' embeddings when already computed (:func:`query_vectors`);
    ``removed``: per query, documents read as absent from the corpus (module doc)."""
    s = pipeline.settings
    if s.abstain_min_similarity is None:
        # The retriever fills chunk similarities only when a floor is set; any value will do,
        # since the floor itself is applied here, not by the pipeline.
        s = s.model_copy(update={"abstain_min_similarity": -1.0})
        pipeline = RagPipeline(s, pipeline.index, pipeline.embedder)
    vectors = vectors if vectors is not None else query_vectors(pipeline.embedder, queries)
    out: dict[str, float] = {}
    k = top_k or s.top_k
    for qid, text in queries.items():
        gone = removed.get(qid, ()) if removed is not None else ()
        depth = k + REMOVED_MARGIN if removed is not None else k
        params = SearchParams(
            text, collection=collection, top_k=depth, mode=s.search_mode, fusion=s.fusion
        )
        # The retriever is what RagPipeline.search runs without reranking or LLM transforms.
        found = pipeline.retriever.retrieve(params, query_vector=vectors[qid]).chunks
        chunks = [c for c in found if c.doc_id not in gone][:k]
        sims = [c.similarity for c in chunks if c.similarity is not None]
        out[qid] = max(sims) if sims else NO_SIMILARITY
        if tick:
            tick(1)
    return out


@dataclass(frozen=True)
class FloorRates:
    floor: float
    false_abstention: float  # macro mean over the sets asked against their own corpus
    false_answer: float  # macro mean over the (questions, other corpus) pairs
    per_set: dict[str, float]  # set -> false-abstention rate
    per_pair: dict[str, float]  # "questions -> corpus" -> false-answer rate
    # set -> false-answer rate with the answer removed from its own corpus; not in the rule
    on_topic: dict[str, float] = field(default_factory=dict)

    @property
    def false_answer_on_topic(self) -> float | None:
        return round(statistics.fmean(self.on_topic.values()), 4) if self.on_topic else None

    @property
    def total(self) -> float:
        return round(self.false_abstention + self.false_answer, 4)

    def to_dict(self) -> dict[str, Any]:
        return {
            "floor": self.floor,
            "false_abstention": self.false_abstention,
            "false_answer": self.false_answer,
            "sum": self.total,
            "per_set_false_abstention": self.per_set,
            "per_pair_false_answer": self.per_pair,
            "false_answer_on_topic": self.false_answer_on_topic,
            "per_set_false_answer_on_topic": self.on_topic,
        }


def _below(sims: Sequence[float], floor: float) -> float:
    """Share of ``sims`` under ``floor``: the questions the pipeline abstains on."""
    return sum(1 for v in sims if v < floor) / len(sims) if sims else 0.0


def _answered(sims: Sequence[float], floor: float) -> float:
    return round(1 - _below(sims, floor), 4) if sims else 0.0


def rates(
    answerable: Mapping[str, Sequence[float]],
    unanswerable: Mapping[str, Sequence[float]],
    floors: Sequence[float],
    on_topic: Mapping[str, Sequence[float]] | None = None,
) -> list[FloorRates]:
    """The error rates at each floor; the pipeline answers when best similarity ≥ floor.
    ``on_topic``: each set's similarities with its answers removed (module doc)."""
    curve = []
    for floor in floors:
        per_set = {name: round(_below(sims, floor), 4) for name, sims in answerable.items()}
        per_pair = {name: _answered(sims, floor) for name, sims in unanswerable.items()}
        curve.append(
            FloorRates(
                floor,
                round(statistics.fmean(per_set.values()), 4) if per_set else 0.0,
                round(statistics.fmean(per_pair.values()), 4) if per_pair else 0.0,
                per_set,
                per_pair,
                {name: _answered(sims, floor) for name, sims in (on_topic or {}).items()},
            )
        )
    return curve


@dataclass(frozen=True)
class Similarities:
    """Best similarities per question, by case (module doc)."""

    answerable: dict[str, list[float]]  # set -> its questions against its own corpus
    unanswerable: dict[str, list[float]]  # "questions -> corpus" -> against another set's
    on_topic: dict[str, list[float]]  # set -> against its own corpus, judged documents removed

    def rates(self, floors: Sequence[float]) -> list[FloorRates]:
        return rates(self.answerable, self.unanswerable, floors, self.on_topic)


def measure(
    pipeline: RagPipeline,
    datasets: Sequence[BeirDataset],
    tick: Tick | None = None,
    index_progress: Callable[[str, int], None] | None = None,
) -> Similarities:
    """Best similarities of each set's queries against its own corpus, against it without their
    judged documents, and against every other set's corpus."""
    collections = {}
    for d in datasets:
        progress = _labelled(index_progress, d.name)
        collections[d.name], _ = prepare_index(pipeline, d, progress)
    measured = Similarities({}, {}, {})
    for d in datasets:
        vectors = query_vectors(pipeline.embedder, d.queries)
        for other in datasets:
            found = best_similarities(
                pipeline, d.queries, collections[other.name], vectors, tick=tick
            )
            sims = list(found.values())
            if other.name == d.name:
                measured.answerable[d.name] = sims
            else:
                measured.unanswerable[f"{d.name} -> {other.name}"] = sims
        judged = {
            qid: {doc for doc, rel in docs.items() if rel > 0} for qid, docs in d.qrels.items()
        }
        removed = best_similarities(
            pipeline, d.queries, collections[d.name], vectors, tick=tick, removed=judged
        )
        measured.on_topic[d.name] = list(removed.values())
    return measured


def _labelled(
    progress: Callable[[str, int], None] | None, name: str
) -> Callable[[int, int], None] | None:
    """``progress(name, documents)`` as an ingest progress callback (documents, chunks)."""
    if progress is None:
        return None
    return lambda documents, _chunks: progress(name, documents)


def choose_floor(curve: Sequence[FloorRates]) -> FloorRates:
    """The rule (module doc): least false-abstention + false-answer, the lowest floor on a tie."""
    return min(curve, key=lambda r: (r.total, r.floor))


def curve_markdown(curve: Sequence[FloorRates], chosen: float | None = None) -> str:
    lines = [
        "| floor | false abstention | false answer | sum "
        "| false answer, on topic (not in the rule) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in curve:
        mark = " ←" if chosen is not None and r.floor == chosen else ""
        on_topic = r.false_answer_on_topic
        lines.append(
            f"| {r.floor:.3f}{mark} | {r.false_abstention:.4f} | {r.false_answer:.4f} "
            f"| {r.total:.4f} | {'—' if on_topic is None else f'{on_topic:.4f}'} |"
        )
    return "\n".join(lines) + "\n"
