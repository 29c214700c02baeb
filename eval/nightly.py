"""The nightly job: run the configured suites, keep every run, report trends, fail on regressions.

A config (YAML) lists suites and their gates::

    results_dir: eval-results/nightly
    suites:
      - name: scifact
        kind: retrieval            # retrieval | ladder | detector
        dataset: ../shared/datasets/scifact
        modes: [sparse, dense, hybrid-rrf]
        floors: {hybrid-rrf.ndcg@10: 0.70}
        tolerance: 0.01

Every run is stored as ``runs/<timestamp>.json`` with flat metric names (``suite.mode.metric``).
A metric fails when it is below its floor, or when it dropped more than the suite's tolerance
against the last accepted baseline (``baseline.json``, replaced by each run that passes). The HTML
report is self-contained: a trend chart per gated metric over past runs, the gate table, and the
ladder chart when a ladder suite ran.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from service.pipeline import RagPipeline

from .report import figure_png, image, page, pyplot, table, td, tr


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    kind: Literal["retrieval", "ladder", "detector"]
    dataset: Path
    modes: list[str] = Field(default_factory=lambda: ["sparse", "dense", "hybrid-rrf"])
    chunk_sizes: list[int] = Field(default_factory=list)
    limit: int | None = None
    floors: dict[str, float] = Field(default_factory=dict)
    tolerance: float = Field(0.01, ge=0)


class NightlyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    results_dir: Path = Path("eval-results/nightly")
    suites: list[Suite] = Field(min_length=1)

    @classmethod
    def load(cls, path: Path) -> NightlyConfig:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        config = cls.model_validate(raw)
        base = Path(path).resolve().parent  # relative paths are relative to the config file
        config.results_dir = base / config.results_dir
        for suite in config.suites:
            suite.dataset = base / suite.dataset
        return config


class Gate(BaseModel):
    metric: str
    value: float | None
    floor: float | None
    baseline: float | None
    tolerance: float
    ok: bool
    reason: str = ""


def run_suite(
    pipeline: RagPipeline,
    suite: Suite,
    log: Callable[[str], None],
    tick: Callable[[int], None] | None = None,
) -> tuple[dict[str, float], bytes | None]:
    """Flat ``{suite.mode.metric: value}`` for one suite, and a chart when it draws one."""
    flat: dict[str, float] = {}
    chart = None
    if suite.kind == "detector":
        from .detector import validate_detector
        from .hallucination import HallucinationDetector

        report = validate_detector(
            HallucinationDetector(pipeline.embedder), suite.dataset, suite.limit, tick
        )
        for key, value in report["held_out"].items():
            flat[f"{suite.name}.held_out.{key}"] = float(value)
        return flat, None
    from .datasets import load_beir

    dataset = load_beir(suite.dataset).limited(suite.limit)
    if suite.kind == "retrieval":
        from .retrieval import evaluate_retrieval, prepare_index

        log(f"{suite.name}: indexing {len(dataset.corpus)} documents (cached after the first run)")
        collection, _ = prepare_index(pipeline, dataset)
        by_mode = evaluate_retrieval(pipeline, dataset, suite.modes, collection, tick)
        for mode, scores in by_mode.items():
            for key, value in scores.items():
                flat[f"{suite.name}.{mode}.{key}"] = float(value)
    else:
        from .ladder import ladder_chart, run_ladder

        rows = run_ladder(pipeline, dataset, suite.chunk_sizes, tick)
        for row in rows:
            for key, value in row.metrics.items():
                flat[f"{suite.name}.{row.name}.{key}"] = float(value)
        chart = ladder_chart(rows, dataset.name)
    return flat, chart


def check_gates(
    config: NightlyConfig, metrics: dict[str, float], baseline: dict[str, float]
) -> list[Gate]:
    gates = []
    for suite in config.suites:
        gated = set(suite.floors) | {
            k.removeprefix(f"{suite.name}.") for k in baseline if k.startswith(f"{suite.name}.")
        }
        for short in sorted(gated):
            name = f"{suite.name}.{short}"
            if short.endswith(("latency_p50_ms", "queries", "answers", "_low", "_high")):
                continue  # not quality metrics, or an interval around one
            value, floor, base = metrics.get(name), suite.floors.get(short), baseline.get(name)
            reasons = []
            if value is None:
                reasons.append("not measured")
            else:
                if floor is not None and value < floor:
                    reasons.append(f"{value:.4f} < floor {floor:.4f}")
                if base is not None and value < base - suite.tolerance:
                    reasons.append(
                        f"dropped {base - value:.4f} vs baseline {base:.4f} "
                        f"(tolerance {suite.tolerance})"
                    )
            gates.append(
                Gate(
                    metric=name,
                    value=value,
                    floor=floor,
                    baseline=base,
                    tolerance=suite.tolerance,
                    ok=not reasons,
                    reason="; ".join(reasons),
                )
            )
    return gates


def run_nightly(
    config: NightlyConfig,
    pipeline: RagPipeline,
    log: Callable[[str], None] = print,
    ticker: Callable[[Suite], Callable[[int], None]] | None = None,
) -> tuple[bool, Path, list[Gate]]:
    """Run every suite (``ticker(suite)`` gives each a progress callback), gate, store, report."""
    results = config.results_dir
    (results / "runs").mkdir(parents=True, exist_ok=True)
    baseline_path = results / "baseline.json"
    baseline = json.loads(baseline_path.read_text())["metrics"] if baseline_path.exists() else {}
    metrics: dict[str, float] = {}
    charts: dict[str, bytes] = {}
    for suite in config.suites:
        flat, chart = run_suite(pipeline, suite, log, ticker(suite) if ticker else None)
        metrics.update(flat)
        if chart:
            charts[suite.name] = chart
    gates = check_gates(config, metrics, baseline)
    passed = all(g.ok for g in gates)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    record = {
        "run": stamp,
        "model": pipeline.embedder.name,
        "passed": passed,
        "metrics": metrics,
        "gates": [g.model_dump() for g in gates],
    }
    (results / "runs" / f"{stamp}.json").write_text(json.dumps(record, indent=2))
    if passed:
        baseline_path.write_text(json.dumps(record, indent=2))
    report = results / "report.html"
    report.write_text(render_report(load_history(results), gates, charts, passed))
    return passed, report, gates


def load_history(results: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((results / "runs").glob("*.json"))]


def _trend_png(metric: str, history: list[dict[str, Any]], floor: float | None) -> bytes:
    points = [(i, h["metrics"][metric]) for i, h in enumerate(history) if metric in h["metrics"]]
    fig, ax = pyplot().subplots(figsize=(4.2, 2.4), dpi=100)
    ax.plot([p[0] + 1 for p in points], [p[1] for p in points], marker="o", color="#2f6db5")
    if floor is not None:
        ax.axhline(floor, color="#c0392b", linestyle="--", linewidth=1, label="floor")
        ax.legend(fontsize=7, loc="lower left")
    ax.set_title(metric, fontsize=9)
    ax.set_xlabel("run", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.xaxis.get_major_locator().set_params(integer=True)
    return figure_png(fig)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def render_report(
    history: list[dict[str, Any]], gates: list[Gate], charts: dict[str, bytes], passed: bool
) -> str:
    status = "PASSED" if passed else "FAILED"
    rows = [
        tr(
            [
                td(g.metric),
                td(_number(g.value)),
                td(_number(g.floor)),
                td(_number(g.baseline)),
                td("ok" if g.ok else g.reason),
            ],
            "ok" if g.ok else "bad",
        )
        for g in gates
    ]
    trends = "".join(image(_trend_png(g.metric, history, g.floor), g.metric) for g in gates)
    ladders = "".join(
        f"<h2>Ladder: {html.escape(n)}</h2>{image(png, n)}" for n, png in charts.items()
    )
    latest = history[-1]["run"] if history else ""
    color = "#1e7e34" if passed else "#c0392b"
    header = ("metric", "value", "floor", "baseline", "gate")
    return page(
        f"grounded nightly eval: {status}",
        f"""<h1>grounded nightly eval: <span class="status">{status}</span></h1>
<p>Run {html.escape(latest)}; {len(history)} run(s) on record.</p>
{table(header, rows)}
<h2>Trends</h2><div>{trends}</div>{ladders}""",
        style=f"\ntr.bad td{{background:#fbe3e1}}\n.status{{font-weight:bold;color:{color}}}"
        "\nimg{margin:4px}",
    )
