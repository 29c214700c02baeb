"""Today's defaults against candidate settings on several BEIR sets, in one table
(``grounded eval compare``), and the rule that picks a new default from it.

A candidate is a few settings (``fusion=dbsf``, ``rrf_k=20``, ``chunk_size=128``) and/or a
document aggregation (``aggregation=max+0.1``, see :mod:`eval.aggregation`). Everything else is
today's settings. A candidate that changes the chunking gets its own index (the eval's index
cache is keyed by the chunker, :func:`eval.retrieval.collection_for`); one that changes only
fusion reuses the baseline's, and one that changes only the aggregation reuses the baseline's
search results too: chunk hits are kept per (index, search settings) and aggregated per
candidate, so an aggregation costs no queries.

The rule (:func:`choose`): on dev splits only, the candidate with the best mean nDCG@10 across
the sets among those that lose no more than ``tolerance`` (0.005) on any set against the
baseline and gain beyond noise on at least one (the 95% bootstrap interval of the per-query
difference, :mod:`eval.significance`, lies above 0); none when no candidate beats the baseline's
mean that way. Without that evidence a change is churn: a re-index, often more chunks, and a
"gain" the next sample takes back.

Example::

    report = compare(pipeline, [scifact_dev, xquad_dev], [parse_candidate("fusion=dbsf")])
    print(compare_markdown(report)); choose(report)
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError

from ingest.settings import ChunkingSettings, RetrievalSettings, Settings
from service.pipeline import RagPipeline
from service.retrieval import SearchParams

from .aggregation import DEFAULT_AGGREGATION, aggregate, check_aggregation
from .datasets import BeirDataset
from .metrics import mean_metrics, per_query_metrics
from .retrieval import CHUNK_DEPTH, Tick, prepare_index, query_vectors
from .significance import Interval, paired_interval

BASELINE = "defaults"
METRIC = "ndcg@10"
TOLERANCE = 0.005
# What a candidate may change: how chunks are cut, BM25's weighting, and how a hybrid search is
# fused and read.
TUNABLE = frozenset(
    {*ChunkingSettings.model_fields, *RetrievalSettings.model_fields, "bm25_k1", "bm25_b"}
    - {"top_k", "max_top_k"}
)
# Settings that DBSF ignores.
RRF_ONLY = frozenset({"rrf_k", "dense_weight", "sparse_weight"})
# Chunk hits of one query: (doc_id, score), best first.
Hits = list[tuple[str, float]]


@dataclass(frozen=True)
class Candidate:
    label: str
    overrides: dict[str, Any] = field(default_factory=dict)
    aggregation: str = DEFAULT_AGGREGATION

    def settings(self, base: Settings) -> Settings:
        """``base`` with the overrides; a smaller chunk keeps a valid overlap (as the ladder)."""
        values = {**base.model_dump(), **self.overrides}
        if "chunk_size" in self.overrides and "chunk_overlap" not in self.overrides:
            values["chunk_overlap"] = min(base.chunk_overlap, int(values["chunk_size"]) // 4)
        return type(base).model_validate(values)


def parse_candidate(spec: str, base: Settings | None = None) -> Candidate:
    """``key=value[,key=value...]`` -> a :class:`Candidate`, its values checked and typed
    against ``base`` (default: the settings in force); ValueError names what is wrong."""
    overrides: dict[str, Any] = {}
    aggregation = DEFAULT_AGGREGATION
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        key, value = key.strip().replace("-", "_"), value.strip()
        if not sep or not value:
            raise ValueError(f"candidate {spec!r}: {part!r} is not key=value")
        if key == "aggregation":
            aggregation = check_aggregation(value)
        elif key in TUNABLE:
            overrides[key] = value
        else:
            allowed = ", ".join(sorted({*TUNABLE, "aggregation"}))
            raise ValueError(f"candidate {spec!r}: {key!r} cannot be compared; use {allowed}")
    if not overrides and aggregation == DEFAULT_AGGREGATION:
        raise ValueError(f"candidate {spec!r} changes nothing")
    candidate = Candidate(spec.strip(), overrides, aggregation)
    # Validate (and coerce) now, so a typo fails before any index is built.
    try:
        coerced = candidate.settings(base or Settings())
    except ValidationError as exc:
        raise ValueError(f"candidate {spec!r}: {exc.errors()[0]['msg']}") from None
    rrf_knobs = sorted(RRF_ONLY & overrides.keys())
    if rrf_knobs and coerced.fusion != "rrf":
        # It would measure exactly the baseline and look like a tie.
        raise ValueError(
            f"candidate {spec!r}: {', '.join(rrf_knobs)} only change RRF fusion, and the "
            f"candidate fuses with {coerced.fusion}: add fusion=rrf"
        )
    typed = {k: getattr(coerced, k) for k in overrides}
    return Candidate(spec.strip(), typed, aggregation)


@dataclass
class DatasetResult:
    dataset: str
    split: str
    queries: int
    scores: dict[str, dict[str, float]]  # candidate label -> metrics
    intervals: dict[str, Interval]  # candidate label -> the 95% interval of its delta

    def delta(self, label: str, metric: str = METRIC) -> float:
        return round(self.scores[label][metric] - self.scores[BASELINE][metric], 4)


@dataclass
class CompareReport:
    candidates: list[Candidate]
    results: list[DatasetResult]
    baseline: dict[str, Any]  # the settings compared against, for the record

    @property
    def labels(self) -> list[str]:
        return [BASELINE, *(c.label for c in self.candidates)]

    def mean(self, label: str, metric: str = METRIC) -> float:
        return round(statistics.fmean(r.scores[label][metric] for r in self.results), 4)

    def beyond_noise(self, label: str) -> list[str]:
        """The sets on which ``label``'s delta is real at 95%: its interval excludes 0."""
        return [r.dataset for r in self.results if r.intervals[label].excludes_zero]

    def gains_beyond_noise(self, label: str) -> list[str]:
        """The sets on which ``label`` gains for real at 95%: its interval, as the table prints
        it (4 decimals), lies above 0."""
        return [r.dataset for r in self.results if r.intervals[label].rounded()[0] > 0]

    def losses_beyond_noise(self, label: str) -> list[str]:
        """The sets on which ``label`` loses for real at 95%, read the same way."""
        return [r.dataset for r in self.results if r.intervals[label].rounded()[1] < 0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": METRIC,
            "baseline": self.baseline,
            "candidates": [
                {"label": c.label, "overrides": c.overrides, "aggregation": c.aggregation}
                for c in self.candidates
            ],
            "datasets": [
                {
                    "dataset": r.dataset,
                    "split": r.split,
                    "queries": r.queries,
                    "scores": r.scores,
                    "delta": {c.label: r.delta(c.label) for c in self.candidates},
                    "delta_ci95": {
                        c.label: r.intervals[c.label].rounded() for c in self.candidates
                    },
                }
                for r in self.results
            ],
            "mean": {label: self.mean(label) for label in self.labels},
            "mean_delta": {
                c.label: round(self.mean(c.label) - self.mean(BASELINE), 4) for c in self.candidates
            },
            "chosen": choose(self),
            "best_mean_without_evidence": choose(self, evidence=False),
            "rule": RULE,
            "beyond_noise": {c.label: self.beyond_noise(c.label) for c in self.candidates},
        }


RULE = (
    f"on dev splits: the candidate with the best mean {METRIC} that loses no more than "
    f"{TOLERANCE} on any set against the defaults and gains beyond noise (95% interval above 0) "
    "on at least one; none if none beats the defaults' mean that way"
)


def choose(
    report: CompareReport, tolerance: float = TOLERANCE, *, evidence: bool = True
) -> str | None:
    """The label the rule picks (module doc), or None: keep today's defaults. ``evidence=False``
    drops the beyond-noise condition: the pick the mean alone would make, to say why it was not
    made."""
    best, best_mean = None, report.mean(BASELINE)
    for c in report.candidates:
        # Rounded deltas, the figures the table shows, so the verdict can be checked by eye.
        if any(r.delta(c.label) < -tolerance for r in report.results):
            continue
        if evidence and not report.gains_beyond_noise(c.label):
            continue
        mean = report.mean(c.label)
        if mean > best_mean:
            best, best_mean = c.label, mean
    return best


def search_hits(
    pipeline: RagPipeline,
    dataset: BeirDataset,
    collection: str,
    vectors: Mapping[str, np.ndarray],
    tick: Tick | None = None,
) -> dict[str, Hits]:
    """Each query's chunk hits under ``pipeline``'s settings: the default mode and fusion, as a
    request that names neither gets them. ``vectors`` are the queries' embeddings
    (:func:`eval.retrieval.query_vectors`), so each is computed once for all candidates; the
    search is the service's retriever, which is all ``RagPipeline.search`` runs without
    reranking or LLM transforms."""
    s = pipeline.settings
    hits: dict[str, Hits] = {}
    for qid, text in dataset.queries.items():
        params = SearchParams(
            text,
            collection=collection,
            top_k=CHUNK_DEPTH,
            mode=s.search_mode,
            fusion=s.fusion,
            prefetch_limit=s.prefetch_limit,  # as served (eval.retrieval.CHUNK_DEPTH)
        )
        result = pipeline.retriever.retrieve(params, query_vector=vectors[qid])
        hits[qid] = [(c.doc_id, c.score) for c in result.chunks]
        if tick:
            tick(1)
    return hits


def _search_key(settings: Settings, collection: str) -> tuple[Any, ...]:
    """What decides a search's chunk hits, aggregation aside."""
    fields = sorted(RetrievalSettings.model_fields)
    return (collection, *(getattr(settings, f) for f in fields))


def compare(
    pipeline: RagPipeline,
    datasets: Sequence[BeirDataset],
    candidates: Sequence[Candidate],
    tick: Tick | None = None,
    index_progress: Callable[[str, str, int], None] | None = None,
) -> CompareReport:
    """nDCG@10 etc. of the baseline and each candidate on each dataset (module doc).

    ``index_progress(dataset, label, documents)`` reports indexing; ``tick(n)`` queries run."""
    configs = [Candidate(BASELINE), *candidates]
    results: list[DatasetResult] = []
    for dataset in datasets:
        vectors = query_vectors(pipeline.embedder, dataset.queries)
        cache: dict[tuple[Any, ...], dict[str, Hits]] = {}
        # (chunking, BM25 weights) -> collection, within this dataset
        collections: dict[tuple[Any, ...], str] = {}
        scores: dict[str, dict[str, float]] = {}
        by_query: dict[str, dict[str, float]] = {}  # label -> each query's METRIC
        for config in configs:
            settings = config.settings(pipeline.settings)
            variant = (
                pipeline
                if settings == pipeline.settings
                else RagPipeline(settings, pipeline.index, pipeline.embedder)
            )
            # What the index holds: how chunks are cut and BM25 weights them.
            built = (settings.chunk_size, settings.chunk_overlap, settings.bm25_k1, settings.bm25_b)
            if built not in collections:
                progress = _labelled(index_progress, dataset.name, config.label)
                collections[built], _ = prepare_index(variant, dataset, progress)
            key = _search_key(settings, collections[built])
            if key not in cache:
                cache[key] = search_hits(variant, dataset, collections[built], vectors, tick)
            run = {q: aggregate(h, config.aggregation) for q, h in cache[key].items()}
            per_query = per_query_metrics(dataset.qrels, run)
            scores[config.label] = {m: round(v, 4) for m, v in mean_metrics(per_query).items()}
            by_query[config.label] = {q: v[METRIC] for q, v in per_query.items()}
        intervals = {
            c.label: paired_interval(by_query[BASELINE], by_query[c.label]) for c in candidates
        }
        results.append(
            DatasetResult(dataset.name, dataset.split, len(dataset.queries), scores, intervals)
        )
    baseline = {k: getattr(pipeline.settings, k) for k in sorted(TUNABLE)}
    return CompareReport(list(candidates), results, {**baseline, "aggregation": "max"})


def _labelled(
    progress: Callable[[str, str, int], None] | None, dataset: str, label: str
) -> Callable[[int, int], None] | None:
    """``progress(dataset, label, documents)`` as an ingest progress callback."""
    if progress is None:
        return None
    return lambda documents, _chunks: progress(dataset, label, documents)


def compare_markdown(report: CompareReport) -> str:
    """One table: a row per dataset and the mean, the baseline's and each candidate's
    nDCG@10 with its delta and, on a dataset's row, the delta's 95% interval."""
    header = ["dataset (split, queries)", f"{BASELINE} {METRIC}"]
    for c in report.candidates:
        header += [c.label, "Δ"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in report.results:
        cells = [f"{r.dataset} ({r.split}, {r.queries})", f"{r.scores[BASELINE][METRIC]:.4f}"]
        for c in report.candidates:
            ci = r.intervals[c.label]
            delta = f"{r.delta(c.label):+.4f} [{ci.low:+.4f}, {ci.high:+.4f}]"
            cells += [f"{r.scores[c.label][METRIC]:.4f}", delta]
        lines.append("| " + " | ".join(cells) + " |")
    base_mean = report.mean(BASELINE)
    cells = ["**mean**", f"{base_mean:.4f}"]
    for c in report.candidates:
        cells += [f"{report.mean(c.label):.4f}", f"{report.mean(c.label) - base_mean:+.4f}"]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def verdict(report: CompareReport, split: str) -> list[str]:
    """What the rule makes of ``report``, in lines under the table: the rule, the pick (on a
    dev split; elsewhere the same line is a report only) and where its deltas are real, or why
    the best mean was not picked."""
    chosen = choose(report)
    head = "chosen" if split == "dev" else f"the rule would pick (on {split}: report only)"
    lines = [
        f"rule: {RULE}",
        f"{head}: {chosen or 'none, keep the defaults'}",
        "[low, high]: 95% bootstrap interval of the per-query difference",
    ]
    if chosen:
        lines.append(
            f"{chosen} gains beyond noise on: {', '.join(report.gains_beyond_noise(chosen))}"
        )
        if losses := report.losses_beyond_noise(chosen):
            lines.append(
                f"{chosen} loses beyond noise (within the tolerance) on: {', '.join(losses)}"
            )
    unproven = choose(report, evidence=False)
    if unproven and unproven != chosen:
        gain = report.mean(unproven) - report.mean(BASELINE)
        lines.append(
            f"{unproven} has the best mean ({gain:+.4f}), but its gain is within the noise of "
            "every set"
        )
    return lines
