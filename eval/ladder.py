"""The optimization ladder on your own data: each retrieval technique as one measured row.

Rows: BM25 only; dense only (the baseline: plain cosine similarity); hybrid RRF; hybrid DBSF;
then, each on top of hybrid with the served fusion (``Settings.fusion``, as a request gets it):
other chunk sizes, +reranker (cross-encoder or LLM), +multi-query and +hyde; with
``tuned_embeddings`` / ``tuned_reranker`` (folders written by ``grounded tune``),
+tuned-embeddings (an index built with the tuned model) and +tuned-reranker (reranked by the
tuned cross-encoder), each described with the dev
verdict of its ``tuning.json`` so a model that lost on dev shows as such. Rows for techniques
that need a reranker or an LLM are listed as skipped,
with the reason, until one is configured; queries where an LLM stage fell back are counted in
the row's description. Each row reports nDCG@10 (and the other
metrics), its delta against the baseline and the median query latency.

Example::

    rows = run_ladder(pipeline, dataset, chunk_sizes=[128])
    write_ladder_report(rows, Path("ladder-out"), title="scifact")
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.pipeline import RagPipeline

from .datasets import BeirDataset
from .metrics import METRICS
from .report import figure_png, image, page, pyplot, table, td, tr
from .retrieval import prepare_index, run_queries, score_run

BASELINE = "dense"
CI = "nDCG@10 95% CI"  # over queries (eval.significance): how far a row's figure can be trusted
Tick = Callable[[int], None]


@dataclass
class LadderRow:
    name: str
    description: str
    metrics: dict[str, float] = field(default_factory=dict)
    latency_p50_ms: float | None = None
    skipped: str | None = None
    delta: float | None = None

    @property
    def interval(self) -> str:
        """The nDCG@10 interval, or "" for a row read from a ladder written before it existed."""
        low, high = self.metrics.get("ndcg@10_low"), self.metrics.get("ndcg@10_high")
        return "" if low is None or high is None else f"{low:.4f}–{high:.4f}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "metrics": self.metrics,
            "delta_ndcg@10": self.delta,
            "latency_p50_ms": self.latency_p50_ms,
            "skipped": self.skipped,
        }


def _measure(
    pipeline: RagPipeline,
    dataset: BeirDataset,
    collection: str,
    mode: str,
    tick: Tick | None,
    **overrides: Any,
) -> tuple[dict[str, float], float]:
    run, latencies = run_queries(pipeline, dataset, collection, mode, tick, **overrides)
    scores, latency_p50 = score_run(dataset.qrels, run, latencies)
    return {k: round(v, 4) for k, v in scores.items()}, latency_p50


def _llm_row(
    name: str,
    description: str,
    pipeline: RagPipeline,
    dataset: BeirDataset,
    collection: str,
    tick: Tick | None,
    **overrides: Any,
) -> LadderRow:
    warnings: list[str] = []
    metrics, latency = _measure(
        pipeline, dataset, collection, _served(pipeline), tick, warnings=warnings, **overrides
    )
    if warnings:
        description += f" ({len(warnings)} queries fell back: {warnings[0]})"
    return LadderRow(name, description, metrics, latency)


def _served(pipeline: RagPipeline) -> str:
    """The eval mode of hybrid search with the fusion a request gets: the rungs above it climb
    from what is served, not from a fusion the defaults no longer use."""
    return f"hybrid-{pipeline.settings.fusion}"


def _hybrid(pipeline: RagPipeline) -> str:
    return f"hybrid {pipeline.settings.fusion.upper()}"


def _labelled(
    progress: Callable[[str, int], None] | None, label: str
) -> Callable[[int, int], None] | None:
    """``progress(label, documents)`` as an ingest progress callback (documents, chunks)."""
    if progress is None:
        return None
    return lambda documents, _chunks: progress(label, documents)


def _tuning_note(model: Path) -> str:
    """The dev verdict ``grounded tune`` recorded for a model, for the row's description."""
    from .tuning.common import read_report

    report = read_report(model)
    if report is None:
        return "no tuning.json: dev verdict unknown"
    verdict = "kept" if report.get("kept") else "REJECTED on dev, not a default"
    return (
        f"{verdict}: dev nDCG@10 {report.get('base_dev_ndcg@10')} base -> "
        f"{report.get('best_dev_ndcg@10')} tuned"
    )


def _tuned_rows(
    pipeline: RagPipeline,
    dataset: BeirDataset,
    collection: str,
    tick: Tick | None,
    index_progress: Callable[[str, int], None] | None,
    tuned_embeddings: Path | None,
    tuned_reranker: Path | None,
) -> list[LadderRow]:
    rows: list[LadderRow] = []
    if tuned_embeddings is not None:
        from .tuning.embeddings import tuned_pipeline

        tuned = tuned_pipeline(pipeline, tuned_embeddings)
        tuned_collection, _ = prepare_index(tuned, dataset, _labelled(index_progress, "tuned"))
        dense, _ = _measure(tuned, dataset, tuned_collection, "dense", tick)
        metrics, latency = _measure(tuned, dataset, tuned_collection, _served(tuned), tick)
        rows.append(
            LadderRow(
                "+tuned-embeddings",
                f"{_hybrid(tuned)}, embeddings by {tuned_embeddings.name} (dense alone: nDCG@10 "
                f"{dense['ndcg@10']:.4f}); {_tuning_note(tuned_embeddings)}",
                metrics,
                latency,
            )
        )
    if tuned_reranker is not None:
        from service.rerank import CrossEncoderReranker

        s = pipeline.settings
        reranker = CrossEncoderReranker(
            str(tuned_reranker), batch_size=s.reranker_batch_size, max_length=s.reranker_max_length
        )
        variant = RagPipeline(
            s, pipeline.index, pipeline.embedder, retriever=pipeline.retriever, reranker=reranker
        )
        metrics, latency = _measure(
            variant, dataset, collection, _served(variant), tick, rerank=True
        )
        rows.append(
            LadderRow(
                "+tuned-reranker",
                f"{_hybrid(variant)}, then reranked by {tuned_reranker.name}; "
                f"{_tuning_note(tuned_reranker)}",
                metrics,
                latency,
            )
        )
    return rows


def run_ladder(
    pipeline: RagPipeline,
    dataset: BeirDataset,
    chunk_sizes: Sequence[int] = (),
    tick: Tick | None = None,
    index_progress: Callable[[str, int], None] | None = None,
    tuned_embeddings: Path | None = None,
    tuned_reranker: Path | None = None,
) -> list[LadderRow]:
    collection, _ = prepare_index(pipeline, dataset, _labelled(index_progress, "base"))
    size = pipeline.settings.chunk_size
    rungs = [
        ("bm25", "BM25 only (sparse vectors, IDF in Qdrant)", "sparse"),
        (BASELINE, "dense only: cosine similarity of embeddings (baseline)", "dense"),
        ("hybrid-rrf", "dense + BM25, reciprocal rank fusion", "hybrid-rrf"),
        ("hybrid-dbsf", "dense + BM25, distribution-based score fusion", "hybrid-dbsf"),
    ]
    rows: list[LadderRow] = []
    for name, description, mode in rungs:
        metrics, latency = _measure(pipeline, dataset, collection, mode, tick)
        rows.append(LadderRow(name, description, metrics, latency))
    for chunk_size in chunk_sizes:
        if chunk_size == size:
            continue
        overlap = min(pipeline.settings.chunk_overlap, chunk_size // 4)
        settings = type(pipeline.settings).model_validate(
            {**pipeline.settings.model_dump(), "chunk_size": chunk_size, "chunk_overlap": overlap}
        )
        variant = RagPipeline(settings, pipeline.index, pipeline.embedder)
        label = f"chunks-{chunk_size}"
        variant_collection, _ = prepare_index(variant, dataset, _labelled(index_progress, label))
        metrics, latency = _measure(variant, dataset, variant_collection, _served(variant), tick)
        described = f"{_hybrid(variant)} with {chunk_size}-token chunks (base: {size})"
        rows.append(LadderRow(label, described, metrics, latency))
    hybrid = _hybrid(pipeline)
    rerank = f"{hybrid}, then reranked"
    if pipeline.reranker is None:
        rows.append(LadderRow("+reranker", rerank, skipped="no reranker configured"))
    else:
        described = f"{rerank} by {pipeline.reranker.name}"
        rows.append(
            _llm_row("+reranker", described, pipeline, dataset, collection, tick, rerank=True)
        )
    n = pipeline.settings.multi_query or 3
    expansions: list[tuple[str, str, dict[str, Any]]] = [
        (
            "+multi-query",
            f"{hybrid} over the question + {n} LLM rephrasings, RRF-fused",
            {"multi_query": n},
        ),
        ("+hyde", f"{hybrid}, dense leg from an LLM-written hypothetical passage", {"hyde": True}),
    ]
    for name, description, options in expansions:
        if pipeline.llm is None:
            rows.append(LadderRow(name, description, skipped="no LLM configured"))
        else:
            described = f"{description} ({pipeline.llm.model})"
            rows.append(_llm_row(name, described, pipeline, dataset, collection, tick, **options))
    rows += _tuned_rows(
        pipeline, dataset, collection, tick, index_progress, tuned_embeddings, tuned_reranker
    )
    baseline = next(r for r in rows if r.name == BASELINE).metrics["ndcg@10"]
    for row in rows:
        if row.metrics:
            row.delta = round(row.metrics["ndcg@10"] - baseline, 4)
    return rows


def ladder_markdown(rows: Sequence[LadderRow]) -> str:
    header = "| row | " + " | ".join(METRICS) + f" | {CI} | Δ nDCG@10 vs dense | p50 ms | notes |"
    lines = [header, "|" + " --- |" * (len(METRICS) + 5)]
    for r in rows:
        if r.skipped:
            lines.append(f"| {r.name} |" + " |" * len(METRICS) + f" | | | skipped: {r.skipped} |")
            continue
        cells = " | ".join([*(f"{r.metrics[m]:.4f}" for m in METRICS), r.interval])
        lines.append(
            f"| {r.name} | {cells} | {r.delta:+.4f} | {r.latency_p50_ms:.1f} | {r.description} |"
        )
    return "\n".join(lines) + "\n"


def ladder_chart(rows: Sequence[LadderRow], title: str) -> bytes:
    """A bar chart of nDCG@10 per row, the baseline marked; PNG bytes."""
    measured = [r for r in rows if r.metrics]
    fig, ax = pyplot().subplots(figsize=(max(6, 1.3 * len(measured)), 4), dpi=110)
    colors = ["#888888" if r.name == BASELINE else "#2f6db5" for r in measured]
    bars = ax.bar(
        [r.name for r in measured], [r.metrics["ndcg@10"] for r in measured], color=colors
    )
    baseline = next(r for r in measured if r.name == BASELINE).metrics["ndcg@10"]
    ax.axhline(baseline, color="#888888", linestyle="--", linewidth=1, label="dense baseline")
    for bar, row in zip(bars, measured, strict=True):
        ax.annotate(
            f"{row.metrics['ndcg@10']:.3f}\n({row.delta:+.3f})",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_ylabel("nDCG@10")
    ax.set_ylim(0, min(1.0, max(r.metrics["ndcg@10"] for r in measured) * 1.25))
    ax.set_title(f"Retrieval ladder: {title}")
    ax.legend(loc="lower right", fontsize=8)
    return figure_png(fig)


def write_ladder_report(rows: Sequence[LadderRow], out_dir: Path, title: str) -> dict[str, Path]:
    """``ladder.md``, ``ladder.json``, ``ladder.png`` and a self-contained ``ladder.html``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png = ladder_chart(rows, title)
    paths = {
        "markdown": out_dir / "ladder.md",
        "json": out_dir / "ladder.json",
        "png": out_dir / "ladder.png",
        "html": out_dir / "ladder.html",
    }
    paths["markdown"].write_text(f"# Retrieval ladder: {title}\n\n" + ladder_markdown(rows))
    paths["json"].write_text(
        json.dumps({"title": title, "rows": [r.to_dict() for r in rows]}, indent=2)
    )
    paths["png"].write_bytes(png)
    paths["html"].write_text(ladder_html(rows, title, png))
    return paths


def ladder_html(rows: Sequence[LadderRow], title: str, png: bytes) -> str:
    body = []
    for r in rows:
        if r.skipped:
            cells = ["<td></td>"] * (len(METRICS) + 3) + [td(f"skipped: {r.skipped}")]
        else:
            cells = [td(f"{r.metrics[m]:.4f}") for m in METRICS] + [td(r.interval)]
            cells += [td(f"{r.delta:+.4f}"), td(f"{r.latency_p50_ms:.1f}")]
            cells.append(td(r.description))
        body.append(tr([td(r.name), *cells]))
    header = ("row", *METRICS, CI, "Δ nDCG@10", "p50 ms", "notes")
    return page(
        f"Retrieval ladder: {title}",
        f"<h1>Retrieval ladder: {html.escape(title)}</h1>\n"
        f"{image(png, 'nDCG@10 per row')}\n{table(header, body)}",
        style="\ntd,th{text-align:right}td:first-child,td:last-child{text-align:left}",
    )
