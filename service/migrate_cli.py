"""``grounded migrate``: copy a collection from the embedded store to a Qdrant server or cluster.

The work is :func:`ingest.migrate.migrate`; this command parses the flags, shows progress and
prints the report. An interrupted run resumes from its checkpoint in
``<data_dir>/migrations/<collection>.json``; ``--restart`` ignores it. New collections on the
target take their layout from the ``GROUNDED_QDRANT_*`` settings (docs/scaling.md).

Example::

    grounded migrate kb --to http://qdrant-0:6333 --api-key "$KEY"
    grounded migrate kb --to http://qdrant-0:6333 --json     # after a crash: resumes
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ingest.index import EdgeIndex, IndexProblem, VectorIndex
from ingest.migrate import Checkpoint, MigrationMismatch, MigrationReport
from ingest.migrate import migrate as copy_collection
from ingest.names import InvalidName, check_collection
from ingest.settings import Settings

from .cli_support import DataDirOpt, err, fail, make_settings, out

# What a server can answer instead of a result: unreachable, refused key, bad request.
_SERVER_ERRORS = (ResponseHandlingException, UnexpectedResponse)


def connect_target(url: str, api_key: str | None, settings: Settings) -> VectorIndex:
    """The Qdrant server or cluster at ``url``; collections it creates get the settings' layout."""
    from ingest.index.server import ClusterParams, ServerIndex

    return ServerIndex.connect(
        url, api_key, timeout=settings.qdrant_timeout, cluster=ClusterParams.from_settings(settings)
    )


def checkpoint_path(settings: Settings, collection: str) -> Path:
    return settings.data_dir / "migrations" / f"{collection}.json"


def migrate(
    collection: Annotated[str, typer.Argument(help="The collection to copy.")],
    to: Annotated[
        str, typer.Option("--to", help="URL of the Qdrant server or cluster (http://host:6333).")
    ],
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="GROUNDED_QDRANT_API_KEY",
            show_envvar=False,
            help="API key of the target (env GROUNDED_QDRANT_API_KEY).",
        ),
    ] = None,
    batch: Annotated[
        int, typer.Option("--batch", min=1, max=4096, help="Points per request.")
    ] = 256,
    verify_queries: Annotated[
        int,
        typer.Option(
            "--verify-queries", min=0, help="Sampled points compared and queried on both sides."
        ),
    ] = 20,
    restart: Annotated[
        bool, typer.Option("--restart", help="Ignore the checkpoint; copy from the first point.")
    ] = False,
    data_dir: DataDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Copy a collection from the embedded store to a Qdrant server or cluster: resumable, and
    verified at the end (exit 1 when the copy differs)."""
    settings = make_settings(data_dir=data_dir)
    try:
        check_collection(collection)
    except InvalidName as exc:
        raise fail(str(exc), 2) from None
    source: VectorIndex | None = None
    target: VectorIndex | None = None
    try:
        source = EdgeIndex(settings.data_dir)
        target = connect_target(to, api_key, settings)
        report = _run(
            source, target, collection, to, settings, batch, verify_queries, restart, as_json
        )
    except MigrationMismatch as exc:
        _print_report(exc.report, as_json)
        raise fail(str(exc)) from None
    except (IndexProblem, InvalidName, OSError, ValueError) as exc:
        raise fail(str(exc)) from None
    except _SERVER_ERRORS as exc:
        raise fail(f"Qdrant at {to} did not answer as expected: {exc}") from None
    finally:
        for index in (target, source):
            if index is not None:
                index.close()
    _print_report(report, as_json)


def _run(
    source: VectorIndex,
    target: VectorIndex,
    collection: str,
    url: str,
    settings: Settings,
    batch: int,
    verify_queries: int,
    restart: bool,
    as_json: bool,
) -> MigrationReport:
    total = source.count(collection) if source.manifest(collection) is not None else None
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=as_json or not err.is_terminal,
    ) as progress:
        task = progress.add_task(f"copying [bold]{collection}[/bold] to {url}", total=total)

        def on_batch(checkpoint: Checkpoint) -> None:
            progress.update(task, completed=checkpoint.copied)
            if checkpoint.done:
                progress.update(task, description=f"verifying [bold]{collection}[/bold]")

        return copy_collection(
            source,
            target,
            collection,
            checkpoint_path(settings, collection),
            target_label=url,
            batch_size=batch,
            verify_queries=verify_queries,
            restart=restart,
            defer_indexing=settings.bulk_defer_indexing,
            on_batch=on_batch,
        )


def _print_report(report: MigrationReport, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    table = Table(
        title=f"migrate summary: {report.collection} → {report.target}", show_header=False
    )
    table.add_row(
        "copied",
        f"{report.copied} points in this run, {report.total_copied} in all "
        f"({report.resumed_from} by an earlier run; {report.batches} batches)",
    )
    table.add_row(
        "points", f"{report.source_points} in the source, {report.target_points} on the target"
    )
    tenants = ", ".join(f"{t} {c['target']}/{c['source']}" for t, c in report.tenants.items())
    table.add_row("per tenant (target/source)", tenants or "-")
    table.add_row("sampled points", f"{report.points_identical}/{report.points_compared} identical")
    table.add_row("dense top 10 (exact)", f"{report.dense_identical}/{report.queries} identical")
    # BM25's IDF is per shard: a sharded cluster scores hybrid queries a little differently.
    table.add_row("hybrid top 10 overlap", f"{report.hybrid_overlap:.0%} (IDF is per shard)")
    table.add_row("time", f"{report.seconds:.1f} s")
    out.print(table)
    for problem in report.problems:
        err.print(f"[red]✗[/red] {problem}", highlight=False)
