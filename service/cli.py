"""The ``grounded`` command line: ingest, delete, search, serve, collections.

Other packages add subcommands through the ``grounded.commands`` entry-point group (the eval
package does), so this module never imports them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from ingest.documents import Document
from ingest.index import IndexProblem
from ingest.loaders import LoadFailure, LoadLimits, iter_documents, stale_documents
from ingest.pipeline import IngestReport, IngestTarget
from ingest.settings import Settings

from .admin_cli import collections_app, doctor, keys_app
from .cli_support import DataDirOpt, err, fail, make_settings, out
from .jobs_cli import jobs_app, worker
from .migrate_cli import migrate

app = typer.Typer(
    name="grounded",
    help="Retrieval-first RAG: ingest documents into Qdrant, search them, serve cited answers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
CollectionOpt = Annotated[
    str | None, typer.Option("--collection", "-c", help="Collection (env GROUNDED_COLLECTION).")
]
TenantOpt = Annotated[
    str | None,
    typer.Option(
        "--tenant", help="Tenant of a local run (env GROUNDED_TENANT); --server uses the key's."
    ),
]
ServerOpt = Annotated[
    str | None,
    typer.Option("--server", help="Go through a running `grounded serve` at this URL."),
]


class _Rate(ProgressColumn):
    def __init__(self, field: str, label: str) -> None:
        super().__init__()
        self.field, self.label = field, label

    def render(self, task: Task) -> Text:
        count = task.fields.get(self.field, 0)
        elapsed = task.elapsed or 0.0
        rate = count / elapsed if elapsed > 0 else 0.0
        return Text(f"{count} {self.label} ({rate:.1f}/s)")


# ingest ------------------------------------------------------------------------------------
@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders (recursive).")],
    collection: CollectionOpt = None,
    prune: Annotated[
        bool, typer.Option(help="Delete documents whose files left these folders.")
    ] = False,
    server: ServerOpt = None,
    tenant: TenantOpt = None,
    data_dir: DataDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Ingest .txt .md .html .pdf .jsonl files; unchanged documents are skipped."""
    settings = make_settings(data_dir=data_dir, collection=collection, tenant=tenant)
    name = settings.collection
    with _target(settings, name, server) as target:
        failures: list[LoadFailure] = []
        seen: dict[str, str] = {}

        def documents() -> Iterator[Document]:
            for item in iter_documents(paths, LoadLimits.from_settings(settings)):
                if isinstance(item, LoadFailure):
                    failures.append(item)
                    err.print(f"[red]✗[/red] {item}")
                elif item.id in seen:
                    failure = LoadFailure(
                        item.source, f"duplicate document id {item.id!r} (also in {seen[item.id]})"
                    )
                    failures.append(failure)
                    err.print(f"[red]✗[/red] {failure}")
                else:
                    seen[item.id] = item.source
                    yield item

        with Progress(
            SpinnerColumn(),
            TextColumn(f"ingesting into [bold]{name}[/bold]"),
            _Rate("docs", "docs"),
            _Rate("chunks", "chunks"),
            TimeElapsedColumn(),
            console=err,
            disable=as_json or not err.is_terminal,
        ) as progress:
            task = progress.add_task("ingest", docs=0, chunks=0, total=None)
            report = target.ingest(
                documents(), lambda d, c: progress.update(task, docs=d, chunks=c)
            )
        report.failures = failures
        if prune:
            failed = {f.source for f in failures}
            stale = stale_documents(target.document_sources(), paths, set(seen), failed)
            report.deleted = target.delete(stale) if stale else 0
    _print_report(report, name, as_json)
    if not report.ok:
        raise typer.Exit(1)


@contextmanager
def _target(settings: Settings, collection: str, server: str | None) -> Iterator[IngestTarget]:
    """The local ingestor, or the running service with ``--server``; errors become messages."""
    from .client import GroundedClient, RemoteIngestTarget, ServiceError

    index = None
    try:
        if server:
            yield RemoteIngestTarget(GroundedClient(server), collection)
        else:
            from ingest.build import build_embedder, build_ingestor, open_ingest_index
            from ingest.index import open_index

            index = open_index(settings)  # a data directory in use fails before the model loads
            embedder = build_embedder(settings, documents=True)
            index = open_ingest_index(settings, embedder, index)
            yield build_ingestor(settings, index, embedder, collection, bulk=True)
    except (IndexProblem, ServiceError) as exc:
        raise fail(str(exc)) from None
    finally:
        if index is not None:
            index.close()


def _print_report(report: IngestReport, collection: str, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps({"collection": collection, **report.to_dict()}))
        return
    seconds = max(report.seconds, 1e-9)
    table = Table(title=f"ingest summary: {collection}", show_header=False)
    table.add_row(
        "documents",
        f"{report.documents} ({report.added} added, {report.updated} updated, "
        f"{report.unchanged} unchanged)",
    )
    table.add_row("skipped", str(len(report.skipped)))
    table.add_row("deleted (pruned)", str(report.deleted))
    table.add_row("chunks written", str(report.chunks_written))
    table.add_row("failed", f"[red]{len(report.failures)}[/red]" if report.failures else "0")
    table.add_row(
        "time",
        f"{report.seconds:.1f} s ({report.documents / seconds:.1f} docs/s, "
        f"{report.chunks_written / seconds:.1f} chunks/s)",
    )
    out.print(table)
    for skipped in report.skipped:
        err.print(f"[yellow]skipped[/yellow] {skipped.doc_id}: {skipped.reason}", markup=True)


# delete ------------------------------------------------------------------------------------
@app.command()
def delete(
    doc_ids: Annotated[list[str], typer.Argument(help="Document ids to remove.")],
    collection: CollectionOpt = None,
    server: ServerOpt = None,
    tenant: TenantOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Remove documents (all their chunks) from a collection."""
    settings = make_settings(data_dir=data_dir, collection=collection, tenant=tenant)
    with _target(settings, settings.collection, server) as target:
        removed = target.delete(doc_ids)
    out.print(f"deleted {removed} of {len(doc_ids)} document(s) from {settings.collection}")
    if removed < len(doc_ids):
        raise typer.Exit(1)


# search ------------------------------------------------------------------------------------
def _parse_filters(specs: list[str]) -> dict[str, Any]:
    """``key=value``, ``key=a|b`` (any of), ``key>=3``, ``key<2020`` → request filters."""
    filters: dict[str, Any] = {}
    for spec in specs:
        for op, name in ((">=", "gte"), ("<=", "lte"), (">", "gt"), ("<", "lt")):
            if op in spec:
                key, value = spec.split(op, 1)
                filters.setdefault(key.strip(), {})[name] = float(value)
                break
        else:
            if "=" not in spec:
                raise fail(f"bad --filter {spec!r}: use key=value, key=a|b, key>=N or key<N", 2)
            key, value = (s.strip() for s in spec.split("=", 1))
            values = [_scalar(v) for v in value.split("|")]
            filters[key] = {"any": values} if len(values) > 1 else values[0]
    return filters


def _scalar(value: str) -> str | int | bool:
    if value.lstrip("-").isdigit():
        return int(value)
    if value in ("true", "false"):
        return value == "true"
    return value


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="The question or keywords.")],
    collection: CollectionOpt = None,
    top_k: Annotated[int | None, typer.Option("--top-k", "-k")] = None,
    mode: Annotated[str | None, typer.Option(help="hybrid | dense | sparse")] = None,
    fusion: Annotated[str | None, typer.Option(help="rrf | dbsf")] = None,
    filters: Annotated[
        list[str] | None, typer.Option("--filter", "-f", help="key=value, key=a|b, key>=N")
    ] = None,
    answer: Annotated[
        bool, typer.Option(help="Also compose a cited answer (like /v1/query).")
    ] = False,
    rerank: Annotated[
        bool | None, typer.Option("--rerank/--no-rerank", help="Rerank (default: when configured).")
    ] = None,
    hyde: Annotated[bool | None, typer.Option("--hyde/--no-hyde", help="HyDE dense leg.")] = None,
    multi_query: Annotated[
        int | None, typer.Option("--multi-query", help="LLM rephrasings fused by RRF (0 = off).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    server: ServerOpt = None,
    tenant: TenantOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Search a collection; --json prints exactly what POST /v1/search returns."""
    settings = make_settings(data_dir=data_dir, collection=collection, tenant=tenant)
    # Like the API: no collection named means the default one, or the router when routes exist.
    options = {"collection": collection, "top_k": top_k, "mode": mode, "fusion": fusion}
    body: dict[str, Any] = {"query": query, **{k: v for k, v in options.items() if v}}
    for key, value in {"rerank": rerank, "hyde": hyde, "multi_query": multi_query}.items():
        if value is not None:
            body[key] = value
    body["filters"] = _parse_filters(filters or [])
    if server:
        from .client import GroundedClient, ServiceError

        try:
            client = GroundedClient(server)
            response = client.query(body) if answer else client.search(body)
        except ServiceError as exc:
            raise fail(str(exc)) from None
    else:
        response = _local_search(settings, body, answer)
    if as_json:
        out.print_json(json.dumps(response, default=str))
        return
    if answer:
        out.print(f"[bold]answer[/bold] ({response['generator']}): {response['answer']}\n")
    table = Table(title=f"{response['mode']} search in {response['collection']}")
    for column in ("#", "score", "doc", "title", "text"):
        table.add_column(column, overflow="fold")
    for hit in response["results"]:
        snippet = " ".join(hit["text"].split())[:160]
        table.add_row(
            str(hit["rank"]), f"{hit['score']:.4f}", hit["doc_id"], hit["title"][:40], snippet
        )
    out.print(table)
    out.print("timings (ms): " + ", ".join(f"{k}={v:.1f}" for k, v in response["timings"].items()))


def _validated(model: Any, body: dict[str, Any], settings: Settings) -> Any:
    """The request as the API would parse it; exit 2 when it is invalid or breaks a limit
    (checked before the model loads)."""
    from pydantic import ValidationError

    from .errors import InvalidRequest
    from .requests import check_limits

    try:
        request = model(**body)
        check_limits(request, settings)
        return request
    except ValidationError as exc:
        raise fail("; ".join(e["msg"] for e in exc.errors()), 2) from None
    except InvalidRequest as exc:
        raise fail(str(exc), 2) from None


def _resolved(request: Any, pipeline: Any) -> tuple[Any, Any]:
    """:func:`~service.requests.resolve` against the loaded pipeline (what it may run depends on
    its parts, a reranker say); a refused request exits 2 like an invalid one."""
    from .errors import InvalidRequest
    from .pipeline import NotConfigured
    from .requests import resolve

    try:
        return resolve(request, pipeline, pipeline.settings.tenant)
    except (InvalidRequest, NotConfigured) as exc:
        raise fail(str(exc), 2) from None


def _local_pipeline(settings: Settings) -> Any:
    from .pipeline import NotConfigured, RagPipeline

    try:
        return RagPipeline.from_settings(settings)
    except (IndexProblem, NotConfigured) as exc:
        raise fail(str(exc)) from None


def _local_search(settings: Settings, body: dict[str, Any], answer: bool) -> dict[str, Any]:
    """What ``POST /v1/query`` (``answer``) or ``POST /v1/search`` would return for ``body``."""
    from .api.schemas import QueryRequest, SearchRequest
    from .pipeline import NotConfigured
    from .responses import query_response, search_response

    request = _validated(QueryRequest if answer else SearchRequest, body, settings)
    pipeline = _local_pipeline(settings)
    try:
        params, options = _resolved(request, pipeline)
        if answer:
            response = query_response(pipeline.query(params, options))
        else:
            prep = pipeline.prepare(params, options)
            response = search_response(prep.params, prep.retrieval, prep.route, prep.warnings)
        return json.loads(json.dumps(response, default=str))
    except (IndexProblem, NotConfigured) as exc:
        raise fail(str(exc)) from None
    finally:
        pipeline.close()


# ask ---------------------------------------------------------------------------------------
@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    collection: CollectionOpt = None,
    stream: Annotated[
        bool, typer.Option("--stream", help="Print the answer as it is written.")
    ] = False,
    top_k: Annotated[int | None, typer.Option("--top-k", "-k")] = None,
    mode: Annotated[str | None, typer.Option(help="hybrid | dense | sparse")] = None,
    rerank: Annotated[bool | None, typer.Option("--rerank/--no-rerank")] = None,
    hyde: Annotated[bool | None, typer.Option("--hyde/--no-hyde")] = None,
    multi_query: Annotated[
        int | None, typer.Option("--multi-query", help="LLM rephrasings fused by RRF (0 = off).")
    ] = None,
    route: Annotated[bool | None, typer.Option("--route/--no-route")] = None,
    generator: Annotated[str | None, typer.Option(help="llm | extractive")] = None,
    filters: Annotated[
        list[str] | None, typer.Option("--filter", "-f", help="key=value, key=a|b, key>=N")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the /v1/query response.")] = False,
    server: ServerOpt = None,
    tenant: TenantOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Answer a question from the documents, with citations (like POST /v1/query)."""
    settings = make_settings(data_dir=data_dir, collection=collection, tenant=tenant)
    options = {
        "collection": collection,
        "top_k": top_k,
        "mode": mode,
        "rerank": rerank,
        "hyde": hyde,
        "multi_query": multi_query,
        "route": route,
        "generator": generator,
    }
    body: dict[str, Any] = {
        "query": question,
        **{k: v for k, v in options.items() if v is not None},
    }
    body["filters"] = _parse_filters(filters or [])
    events = _remote_answer(server, body) if server else _local_answer(settings, body)
    final: dict[str, Any] | None = None
    for event, data in events:
        if event == "delta" and stream and not as_json:
            sys.stdout.write(data["text"])
            sys.stdout.flush()
        elif event == "reset" and stream and not as_json:
            err.print(f"\n[yellow]LLM failed mid-answer ({data['reason']}); falling back[/yellow]")
        elif event == "done":
            final = data
        elif event == "error":
            raise fail(data.get("detail", "the answer failed"))
    if final is None:
        raise fail("the service ended the answer without a result")
    if as_json:
        out.print_json(json.dumps(final, default=str))
        return
    if stream:
        sys.stdout.write("\n")
    else:
        out.print(final["answer"], highlight=False, markup=False)
    _print_sources(final)


def _print_sources(final: dict[str, Any]) -> None:
    if final.get("degraded"):
        err.print(f"[yellow]degraded:[/yellow] {final.get('degraded_reason')}")
    for warning in final.get("warnings", []):
        err.print(f"[yellow]note:[/yellow] {warning}")
    route = final.get("route")
    if route:
        err.print(f"route: {route['name'] or 'no matching source'} (score {route['score']:.3f})")
    if final["citations"]:
        out.print("\n[bold]sources[/bold]")
    for c in final["citations"]:
        where = c["source"] or c["doc_id"]
        out.print(
            f"  [{c['number']}] {c['title'] or c['doc_id']} — {where} "
            f"(chars {c['start']}–{c['end']})",
            highlight=False,
            markup=False,
        )
    sql = final.get("sql")
    if sql and sql.get("query"):  # a sql route: the query and its rows are the source
        out.print("\n[bold]sql[/bold]")
        out.print(f"  {sql['database']}: {sql['query']}", highlight=False, markup=False)
        out.print(f"  {sql['row_count']} row(s): {sql['rows'][:5]}", highlight=False, markup=False)
    timings = ", ".join(f"{k}={v:.0f}" for k, v in final["timings"].items())
    err.print(f"[dim]{final['generator']} · timings (ms): {timings}[/dim]", highlight=False)


def _remote_answer(server: str, body: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    from .client import GroundedClient, ServiceError

    try:
        yield from GroundedClient(server).query_stream(body)
    except ServiceError as exc:
        raise fail(str(exc)) from None


def _local_answer(settings: Settings, body: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    from .api.schemas import QueryRequest
    from .pipeline import NotConfigured, QueryResult, StreamReset
    from .responses import query_response

    request = _validated(QueryRequest, body, settings)
    pipeline = _local_pipeline(settings)
    try:
        _, items = pipeline.query_stream(*_resolved(request, pipeline))
        for item in items:
            if isinstance(item, QueryResult):
                yield "done", json.loads(json.dumps(query_response(item), default=str))
            elif isinstance(item, StreamReset):
                yield "reset", {"reason": item.reason}
            else:
                yield "delta", {"text": item}
    except (IndexProblem, NotConfigured) as exc:
        raise fail(str(exc)) from None
    finally:
        pipeline.close()


# operators: keys, collections, doctor ----------------------------------------------------
app.add_typer(keys_app, name="keys")
app.add_typer(collections_app, name="collections")
app.command()(doctor)

# ingest jobs and workers -------------------------------------------------------------------
app.add_typer(jobs_app, name="jobs")
app.command()(worker)
app.command()(migrate)


# serve -------------------------------------------------------------------------------------
@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (env GROUNDED_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (env GROUNDED_PORT).")] = None,
    data_dir: DataDirOpt = None,
    collection: CollectionOpt = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure", help="Serve beyond loopback WITHOUT API keys (anyone can read and write)."
        ),
    ] = False,
) -> None:
    """Serve the REST API (/v1/search, /v1/query, /v1/chat/completions, /v1/ingest; docs at
    /docs). Beyond loopback, API keys are required (`grounded keys create`)."""
    import uvicorn

    from ingest.embedding import EmbeddingCacheError

    from .api.app import auth_enabled, create_app
    from .api.observability import configure_logging
    from .auth import is_loopback, open_key_store
    from .pipeline import NotConfigured, RagPipeline

    overrides: dict[str, Any] = {"auth": "off"} if insecure else {}
    settings = make_settings(
        data_dir=data_dir, host=host, port=port, collection=collection, **overrides
    )
    if settings.broker_url and not settings.qdrant_url:
        raise fail(
            "GROUNDED_BROKER_URL is set but GROUNDED_QDRANT_URL is not: workers in other "
            "processes cannot write to the embedded store this service opens. Set a Qdrant "
            "server URL, or unset the broker to run jobs inside the service.",
            2,
        )
    keys = open_key_store(settings.keys_url, settings.keys_path)
    if auth_enabled(settings) and not keys.has_active_keys():
        raise fail(
            f"API keys are required when serving on {settings.host} (beyond loopback), and "
            f"{settings.keys_url or settings.keys_path} has none. Create one with "
            "`grounded keys create --tenant T --scope read`, or pass --insecure to serve "
            "without keys.",
            2,
        )
    if not auth_enabled(settings) and not is_loopback(settings.host):
        err.print(
            f"[bold red]warning:[/bold red] serving on {settings.host} WITHOUT authentication: "
            "anyone who can reach this port can read, ingest and delete documents."
        )
    if settings.embedding_threads is None:
        # One process serves (it owns the embedded shard) and runs each sync route on a thread
        # of its pool: concurrent requests already spread over the cores, so each query's
        # embedding gets one ONNX Runtime thread rather than all cores each, which made them
        # queue behind one another (docs/performance.md has the measurements).
        settings = settings.model_copy(update={"embedding_threads": 1})
    try:
        pipeline = RagPipeline.from_settings(settings)
    except (IndexProblem, NotConfigured, EmbeddingCacheError) as exc:
        raise fail(str(exc)) from None
    base = f"http://{settings.host}:{settings.port}"
    key_header = " -H 'Authorization: Bearer <API key>'" if auth_enabled(settings) else ""

    def ready() -> None:
        body = json.dumps(
            {"query": "How do I ingest documents?", "collection": settings.collection, "top_k": 3}
        )
        err.print(
            f"\n[green]grounded is ready[/green] at {base}: open the playground at {base}/ "
            f"(API docs: {base}/docs), or try:\n\n"
            f"  curl -s {base}/v1/query -H 'Content-Type: application/json'{key_header} "
            f"-d '{body}'\n",
            highlight=False,
            soft_wrap=True,
        )

    configure_logging()
    uvicorn.run(
        create_app(pipeline, on_ready=ready),
        host=settings.host,
        port=settings.port,
        log_level="warning",
    )


def _register_plugins() -> None:
    for ep in entry_points(group="grounded.commands"):
        try:
            app.add_typer(ep.load(), name=ep.name)
        except Exception as exc:  # a broken plugin must not take the core CLI down
            err.print(f"[yellow]warning:[/yellow] cannot load command {ep.name!r}: {exc}")


def main() -> None:
    from ingest.embedding import EmbeddingCacheError

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _register_plugins()
    try:
        app()
    except EmbeddingCacheError as exc:
        # A setup problem any command can meet when it first embeds: a message, not a traceback.
        raise SystemExit(fail(str(exc)).exit_code) from None


if __name__ == "__main__":
    main()
