"""``grounded jobs`` (list, show, cancel ingest jobs) and ``grounded worker`` (a Celery worker).

``grounded jobs`` reads the job store directly (the SQLite file in the data directory, or the
broker's Redis), so it works while ``grounded serve`` runs; ``--server URL`` asks a service
instead, with the caller's API key (``GROUNDED_API_KEY``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.table import Table

from .cli_support import DataDirOpt, err, fail, make_settings, out

ServerOpt = Annotated[
    str | None, typer.Option("--server", help="Ask a running `grounded serve` at this URL.")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]

jobs_app = typer.Typer(help="Ingest jobs: list (default), show, cancel.")


class _Jobs:
    """The same three calls over HTTP or over the store (the local caller sees every tenant)."""

    def __init__(self, server: str | None, data_dir: Any) -> None:
        from .client import GroundedClient
        from .jobs.service import JobService, NoDispatch
        from .jobs.store import open_job_store

        self.client = GroundedClient(server) if server else None
        self.service: JobService | None = None
        if self.client is None:
            settings = make_settings(data_dir=data_dir)
            if not settings.broker_url and not settings.jobs_path.is_file():
                raise fail(f"no ingest jobs yet ({settings.jobs_path} does not exist)")
            store = open_job_store(settings.broker_url, settings.jobs_path)
            self.service = JobService(store, NoDispatch())

    def recent(self, limit: int) -> list[dict[str, Any]]:
        if self.client:
            return self.client.jobs(limit)
        assert self.service is not None
        return [j.to_dict() for j in self.service.recent(None, limit)]

    def get(self, job_id: str) -> dict[str, Any]:
        if self.client:
            return self.client.job(job_id)
        assert self.service is not None
        return self.service.get(job_id, None).to_dict()

    def cancel(self, job_id: str) -> dict[str, Any]:
        if self.client:
            return self.client.cancel_job(job_id)
        assert self.service is not None
        return self.service.cancel(job_id, None).to_dict()

    def close(self) -> None:
        if self.service is not None:
            self.service.store.close()


@contextmanager
def _jobs(server: str | None, data_dir: Any) -> Iterator[_Jobs]:
    from .client import ServiceError
    from .jobs import JobFinished, JobNotFound

    jobs = None
    try:
        jobs = _Jobs(server, data_dir)
        yield jobs
    except (ServiceError, JobNotFound, JobFinished, OSError) as exc:
        raise fail(str(exc)) from None
    finally:
        if jobs is not None:
            jobs.close()


def _table(jobs: list[dict[str, Any]]) -> Table:
    table = Table("id", "state", "collection", "tenant", "documents", "chunks", "errors", "created")
    colours = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "running": "cyan"}
    for job in jobs:
        p = job["progress"]
        colour = colours.get(job["state"], "white")
        table.add_row(
            job["id"],
            f"[{colour}]{job['state']}[/{colour}]",
            job["collection"],
            job["tenant"],
            f"{p['documents_done']}/{p['documents_total']}",
            str(p["chunks_written"]),
            str(len(job["errors"]) + job["problems_omitted"]),
            job["created_at"],
        )
    return table


@jobs_app.callback(invoke_without_command=True)
def jobs_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    server: ServerOpt = None,
    data_dir: DataDirOpt = None,
    as_json: AsJson = False,
) -> None:
    """Recent ingest jobs, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    with _jobs(server, data_dir) as jobs:
        found = jobs.recent(limit)
    if as_json:
        out.print_json(json.dumps(found))
    elif not found:
        out.print("no ingest jobs")
    else:
        out.print(_table(found))


@jobs_app.command("show")
def jobs_show(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    server: ServerOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """One job as JSON: state, progress, errors, timings."""
    with _jobs(server, data_dir) as jobs:
        out.print_json(json.dumps(jobs.get(job_id)))


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    server: ServerOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Cancel a job: queued batches are dropped, a running batch finishes."""
    with _jobs(server, data_dir) as jobs:
        job = jobs.cancel(job_id)
    out.print(f"cancelled {job['id']} ({job['progress']['documents_done']} documents done)")


def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Worker processes (env GROUNDED_WORKER_CONCURRENCY).")
    ] = None,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork, or solo (one process).")] = (
        "prefork"
    ),
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
    data_dir: DataDirOpt = None,
) -> None:
    """Run a Celery ingest worker: takes batches of ingest jobs from the broker
    (GROUNDED_BROKER_URL), chunks, embeds and upserts them into GROUNDED_QDRANT_URL."""
    settings = make_settings(data_dir=data_dir, worker_concurrency=concurrency)
    if not settings.broker_url:
        raise fail("set GROUNDED_BROKER_URL (a Redis URL) to run a worker", 2)
    if not settings.qdrant_url:
        err.print(
            "[bold yellow]warning:[/bold yellow] no GROUNDED_QDRANT_URL: this worker writes to "
            f"the embedded store in {settings.data_dir}, which only one process can open "
            "(use one worker process and no `grounded serve` on it)."
        )
    from .jobs.celery_app import make_celery, use_worker_settings, worker_context, worker_threads

    # Before torch starts: OpenMP / MKL read these once.
    threads = str(worker_threads(settings))
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, threads)
    use_worker_settings(settings)
    started = time.monotonic()
    if pool == "solo":  # tasks run in this process: load the model before taking any
        worker_context()
        err.print(f"worker ready in {time.monotonic() - started:.1f} s ({threads} threads)")
    else:
        # Pool processes load the model on their first task; the export must be made here,
        # outside any task's time limit (loading a fork-shared model is not safe).
        from ingest.build import prepare_exports

        prepare_exports(settings)
        err.print(f"embedding exports ready in {time.monotonic() - started:.1f} s")
    app = make_celery(settings)
    app.worker_main(
        [
            "worker",
            f"--loglevel={loglevel}",
            f"--concurrency={settings.worker_concurrency}",
            f"--pool={pool}",
            f"--queues={app.conf.task_default_queue}",
        ]
    )
