"""``grounded eval ...`` commands, registered through the ``grounded.commands`` entry point."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ingest.index import IndexProblem
from ingest.settings import DEFAULT_REPORTS_DIR, Settings
from service.pipeline import RagPipeline

from .datasets import DatasetError, load_beir
from .metrics import METRICS
from .retrieval import MODES, evaluate_retrieval, prepare_index

app = typer.Typer(help="Measure retrieval and answers on your own data.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


def _progress(disable: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=disable,
    )


@app.command()
def retrieval(
    dataset: Annotated[
        Path, typer.Option("--dataset", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/")
    ],
    mode: Annotated[str, typer.Option(help=f"all, or one of: {', '.join(MODES)}")] = "all",
    split: Annotated[str, typer.Option(help="qrels split")] = "test",
    limit: Annotated[int | None, typer.Option(help="only the first N judged queries")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
) -> None:
    """nDCG@10, Recall@10/@100, MRR@10 and MAP per retrieval mode (pytrec_eval)."""
    modes = list(MODES) if mode == "all" else [mode]
    if any(m not in MODES for m in modes):
        err.print(f"[red]error:[/red] unknown mode {mode!r}; use all or one of {', '.join(MODES)}")
        raise typer.Exit(2)
    try:
        data = load_beir(dataset, split).limited(limit)
    except DatasetError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    pipeline = _open_pipeline(data_dir)
    settings = pipeline.settings
    try:
        with _progress(as_json or not err.is_terminal) as progress:
            task = progress.add_task(f"indexing {data.name}", total=len(data.corpus))
            collection, _ = prepare_index(
                pipeline, data, lambda d, _c: progress.update(task, completed=d)
            )
            task = progress.add_task("querying", total=len(data.queries) * len(modes))
            report = evaluate_retrieval(
                pipeline, data, modes, collection, tick=lambda n: progress.advance(task, n)
            )
    finally:
        pipeline.close()
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "dataset": data.name,
                    "split": split,
                    "model": settings.embedding_model,
                    "modes": report,
                }
            )
        )
        return
    table = Table(
        title=f"{data.name} ({len(data.queries)} queries, {split}), {settings.embedding_model}"
    )
    table.add_column("mode")
    for metric in (*METRICS, "latency_p50_ms"):
        table.add_column(metric, justify="right")
    for name, scores in report.items():
        table.add_row(
            name, *(f"{scores[m]:.4f}" for m in METRICS), f"{scores['latency_p50_ms']:.1f}"
        )
    out.print(table)


@app.command()
def detector(
    dataset: Annotated[Path, typer.Option("--dataset", help="HaluEval qa_data.json (JSON Lines)")],
    limit: Annotated[
        int | None, typer.Option(help="only the first N rows (2 answers each)")
    ] = 2000,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Balanced accuracy, F1 and AUROC of the offline hallucination detector, held out."""
    from ingest.build import build_embedder

    from .detector import load_halueval_qa, validate_detector
    from .hallucination import HallucinationDetector

    if not dataset.is_file():
        err.print(f"[red]error:[/red] {dataset} is not a file")
        raise typer.Exit(2)
    rows = len(load_halueval_qa(dataset, limit))
    hd = HallucinationDetector(build_embedder(Settings()))
    with _progress(as_json or not err.is_terminal) as progress:
        task = progress.add_task("scoring answers", total=rows)
        report = validate_detector(hd, dataset, limit, tick=lambda n: progress.advance(task, n))
    if as_json:
        out.print_json(json.dumps(report))
        return
    table = Table(title=f"hallucination detector on {dataset.name} ({report['rows']} rows)")
    for column in ("split", "answers", "balanced acc.", "F1", "AUROC"):
        table.add_column(column, justify="right")
    for split in ("calibration", "held_out"):
        r = report[split]
        table.add_row(
            split,
            str(r["answers"]),
            f"{r['balanced_accuracy']:.4f}",
            f"{r['f1']:.4f}",
            f"{r['auroc']:.4f}",
        )
    out.print(table)
    out.print(f"threshold chosen on the calibration split only: score > {report['threshold']}")


@app.command()
def ladder(
    dataset: Annotated[Path, typer.Option("--dataset", help="BEIR folder")],
    chunk_sizes: Annotated[str, typer.Option(help="comma-separated chunk-size variants")] = "128",
    limit: Annotated[int | None, typer.Option(help="only the first N judged queries")] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="report folder; default: <reports_dir>/ladder-<dataset>"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
) -> None:
    """The optimization ladder: table (markdown, JSON), chart (PNG) and HTML report."""
    from .ladder import ladder_markdown, run_ladder, write_ladder_report

    try:
        sizes = [int(s) for s in chunk_sizes.split(",") if s.strip()]
        data = load_beir(dataset).limited(limit)
    except (ValueError, DatasetError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    pipeline = _open_pipeline(data_dir)
    # Where the API lists reports (GROUNDED_REPORTS_DIR), so the playground shows this one.
    reports_dir = pipeline.settings.reports_dir or DEFAULT_REPORTS_DIR
    try:
        with _progress(as_json or not err.is_terminal) as progress:
            tasks: dict[str, TaskID] = {}

            def indexed(label: str, done: int) -> None:
                if label not in tasks:
                    tasks[label] = progress.add_task(f"indexing ({label})", total=len(data.corpus))
                progress.update(tasks[label], completed=done)

            rungs = 4 + len([s for s in sizes if s != pipeline.settings.chunk_size])
            task = progress.add_task("querying", total=rungs * len(data.queries))
            rows = run_ladder(pipeline, data, sizes, lambda n: progress.advance(task, n), indexed)
    finally:
        pipeline.close()
    paths = write_ladder_report(rows, out_dir or reports_dir / f"ladder-{data.name}", data.name)
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "rows": [r.to_dict() for r in rows],
                    "files": {k: str(v) for k, v in paths.items()},
                }
            )
        )
        return
    out.print(ladder_markdown(rows))
    out.print("written: " + ", ".join(str(p) for p in paths.values()))


def _open_pipeline(data_dir: Path | None) -> RagPipeline:
    settings = Settings(data_dir=data_dir) if data_dir else Settings()
    try:
        return RagPipeline.from_settings(settings)
    except IndexProblem as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


@app.command()
def nightly(
    config: Annotated[Path, typer.Option("--config", help="YAML: results_dir and suites")],
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
) -> None:
    """Run the configured suites, store the run, write the HTML report; exit 1 on a regression."""
    from pydantic import ValidationError

    from .nightly import NightlyConfig, Suite, run_nightly

    try:
        cfg = NightlyConfig.load(config)
    except (OSError, ValidationError, ValueError) as exc:
        err.print(f"[red]error:[/red] invalid nightly config {config}: {exc}")
        raise typer.Exit(2) from None
    pipeline = _open_pipeline(data_dir)
    try:
        with _progress(not err.is_terminal) as progress:

            def ticker(suite: Suite) -> Callable[[int], None]:
                task = progress.add_task(f"{suite.name} ({suite.kind})", total=None)
                return lambda n: progress.advance(task, n)

            passed, report, gates = run_nightly(
                cfg, pipeline, log=lambda m: progress.console.print(m), ticker=ticker
            )
    except (DatasetError, FileNotFoundError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    finally:
        pipeline.close()
    table = Table("metric", "value", "floor", "baseline", "gate")
    for g in gates:
        table.add_row(
            g.metric,
            "" if g.value is None else f"{g.value:.4f}",
            "" if g.floor is None else f"{g.floor:.4f}",
            "" if g.baseline is None else f"{g.baseline:.4f}",
            "[green]ok[/green]" if g.ok else f"[red]{g.reason}[/red]",
        )
    out.print(table)
    out.print(f"{'PASSED' if passed else 'FAILED'}; report: {report}")
    if not passed:
        raise typer.Exit(1)


@app.command()
def answers(
    dataset: Annotated[
        Path, typer.Option("--dataset", help="SQuAD-format JSON, or JSONL questions")
    ],
    corpus: Annotated[
        Path | None, typer.Option(help="corpus JSONL for a JSONL question file")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="only the first N questions")] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="chunks retrieved per question")] = 5,
    judge_url: Annotated[
        str | None, typer.Option(help="judge LLM base URL (env GROUNDED_JUDGE_BASE_URL)")
    ] = None,
    judge_model: Annotated[
        str | None, typer.Option(help="judge model (env GROUNDED_JUDGE_MODEL)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
) -> None:
    """Answers through the full pipeline: EM/F1, id context precision/recall, unsupported claims,
    and ragas metrics when a judge LLM is configured."""
    from .answers import evaluate_answers, load_answer_suite
    from .hallucination import HallucinationDetector
    from .judge import JudgeConfig, RagasJudge
    from .retrieval import index_corpus

    try:
        suite = load_answer_suite(dataset, corpus).limited(limit)
    except (OSError, ValueError, KeyError) as exc:
        err.print(f"[red]error:[/red] cannot load {dataset}: {exc}")
        raise typer.Exit(2) from None
    if not suite.corpus:
        err.print("[red]error:[/red] no corpus: pass --corpus for a JSONL question file")
        raise typer.Exit(2)
    pipeline = _open_pipeline(data_dir)
    s = pipeline.settings
    url, model = judge_url or s.judge_base_url, judge_model or s.judge_model
    judge = None
    if url and model:
        key = s.judge_api_key.get_secret_value() if s.judge_api_key else "not-needed"
        judge = RagasJudge(JudgeConfig(url, model, key, s.judge_timeout), pipeline.embedder)
    try:
        with _progress(as_json or not err.is_terminal) as progress:
            task = progress.add_task(f"indexing {suite.name}", total=len(suite.corpus))
            collection, _ = index_corpus(
                pipeline,
                suite.name,
                dataset,
                suite.corpus,
                lambda d, _c: progress.update(task, completed=d),
            )
            task = progress.add_task("answering", total=len(suite.items))
            summary, _records = evaluate_answers(
                pipeline,
                suite,
                collection,
                top_k=top_k,
                detector=HallucinationDetector(pipeline.embedder),
                judge=judge,
                tick=lambda n: progress.advance(task, n),
            )
    finally:
        pipeline.close()
    summary["judge"] = judge.config.describe() if judge else None
    if as_json:
        out.print_json(json.dumps({"dataset": suite.name, **summary}))
        return
    table = Table(
        title=f"answers: {suite.name} ({summary['questions']} questions, "
        f"generator {summary['generator']})"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if key not in ("generator", "judge"):
            table.add_row(key, "n/a" if value is None else f"{value}")
    out.print(table)
    out.print(f"judge: {summary['judge'] or 'none configured (ragas metrics skipped)'}")
