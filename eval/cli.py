"""``grounded eval ...`` commands, registered through the ``grounded.commands`` entry point."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ingest.index import IndexProblem
from ingest.settings import Settings
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
    settings = Settings(**({"data_dir": data_dir} if data_dir else {}))
    try:
        pipeline = RagPipeline.from_settings(settings)
    except IndexProblem as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
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
