"""Operator commands: ``grounded keys``, ``grounded collections`` and ``grounded doctor``.

Keys live in their own SQLite file, so ``grounded keys`` works while ``grounded serve`` owns the
data directory; ``collections`` and ``doctor`` open the index and so need it free (or a server).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ingest.index import IndexProblem, VectorIndex, open_index, require_manifest
from ingest.names import InvalidName, check_collection
from ingest.settings import Settings

from .auth import SCOPES, ApiKeyStore, open_key_store
from .cli_support import DataDirOpt, err, fail, make_settings, out

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@contextmanager
def _index(settings: Settings) -> Iterator[VectorIndex]:
    try:
        index = open_index(settings)
    except IndexProblem as exc:
        raise fail(str(exc)) from None
    try:
        yield index
    except (IndexProblem, InvalidName) as exc:
        raise fail(str(exc)) from None
    finally:
        index.close()


# keys --------------------------------------------------------------------------------------
keys_app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)


def _store(data_dir: Path | None) -> ApiKeyStore:
    settings = make_settings(data_dir=data_dir)
    return open_key_store(settings.keys_url, settings.keys_path)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="The tenant whose documents the key reaches.")],
    scope: Annotated[
        list[str], typer.Option("--scope", "-s", help=f"One of {', '.join(SCOPES)}; repeatable.")
    ],
    name: Annotated[str, typer.Option(help="What the key is for.")] = "",
    rate: Annotated[
        str | None, typer.Option(help="Own rate limit, e.g. 100/minute (default: settings).")
    ] = None,
    data_dir: DataDirOpt = None,
    as_json: AsJson = False,
) -> None:
    """Create a key and print it once; only its hash is stored."""
    try:
        token, record = _store(data_dir).create(tenant, scope, name=name, rate_limit=rate)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    if as_json:
        body = {"key": token, "prefix": record.prefix, "tenant": record.tenant}
        out.print_json(json.dumps({**body, "scopes": sorted(record.scopes)}))
        return
    out.print(token, highlight=False, markup=False)
    err.print(
        f"key {record.prefix} for tenant {record.tenant!r} with scopes "
        f"{', '.join(sorted(record.scopes))}. It is shown only now: store it safely.",
        highlight=False,
    )


@keys_app.command("list")
def keys_list(data_dir: DataDirOpt = None, as_json: AsJson = False) -> None:
    """Every key's prefix, tenant, scopes and state (never the key itself)."""
    records = _store(data_dir).list()
    if as_json:
        rows = [
            {
                "prefix": r.prefix,
                "tenant": r.tenant,
                "scopes": sorted(r.scopes),
                "name": r.name,
                "created_at": r.created_at,
                "revoked_at": r.revoked_at,
                "rate_limit": r.rate_limit,
            }
            for r in records
        ]
        out.print_json(json.dumps(rows))
        return
    table = Table("prefix", "tenant", "scopes", "name", "created", "state", "rate")
    for r in records:
        state = f"revoked {r.revoked_at}" if r.revoked_at else "active"
        table.add_row(
            r.prefix,
            r.tenant,
            ",".join(sorted(r.scopes)),
            r.name,
            r.created_at,
            state,
            r.rate_limit or "default",
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    prefix: Annotated[str, typer.Argument(help="The key's prefix, as `keys list` shows it.")],
    data_dir: DataDirOpt = None,
) -> None:
    """Revoke a key; the service refuses it from its next request on."""
    if not _store(data_dir).revoke(prefix):
        raise fail(f"no active key with prefix {prefix!r}")
    out.print(f"revoked {prefix}")


# collections -------------------------------------------------------------------------------
collections_app = typer.Typer(help="List or drop collections.")


@collections_app.callback(invoke_without_command=True)
def collections_list(ctx: typer.Context, data_dir: DataDirOpt = None) -> None:
    """List collections with their point counts and embedding models."""
    if ctx.invoked_subcommand is not None:
        return
    with _index(make_settings(data_dir=data_dir)) as index:
        table = Table("collection", "points", "model", "dim", "chunker")
        for name in index.list_collections():
            m = require_manifest(index, name)
            table.add_row(name, str(index.count(name)), m.model, str(m.dimension), m.chunker)
        out.print(table)


@collections_app.command("drop")
def collections_drop(
    name: Annotated[str, typer.Argument(help="The collection to remove, with all its points.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Remove a collection and every tenant's documents in it."""
    try:
        check_collection(name)
    except InvalidName as exc:
        raise fail(str(exc), 2) from None
    with _index(make_settings(data_dir=data_dir)) as index:
        require_manifest(index, name)
        try:
            points = str(index.count(name))
        except IndexProblem:  # a shard that cannot load can still be dropped
            points = "unknown"
        if not yes:
            typer.confirm(f"drop collection {name!r} with {points} points?", abort=True)
        index.drop_collection(name)
    out.print(f"dropped {name} ({points} points)")


# doctor ------------------------------------------------------------------------------------
def doctor(
    collection: Annotated[
        list[str] | None, typer.Option("--collection", "-c", help="Only these (default: all).")
    ] = None,
    fix: Annotated[
        bool, typer.Option("--fix", help="Remove unservable points; stamp untenanted ones.")
    ] = False,
    data_dir: DataDirOpt = None,
    as_json: AsJson = False,
) -> None:
    """Read every point of every collection; report what cannot be served (exit 1 if any)."""
    from ingest.doctor import examine, repair

    settings = make_settings(data_dir=data_dir)
    try:
        names = [check_collection(name) for name in collection or []]
    except InvalidName as exc:
        raise fail(str(exc), 2) from None
    limits = {"max_depth": settings.max_metadata_depth, "max_bytes": settings.max_metadata_bytes}
    reports = []
    with _index(settings) as index:
        for name in names or index.list_collections():
            found = examine(index, name, **limits)
            removed, healthy_now = 0, found.healthy
            if fix and not found.healthy:
                removed = repair(index, found)
                healthy_now = examine(index, name, **limits).healthy  # what the repair left
            reports.append({**found.to_dict(), "removed": removed, "healthy_now": healthy_now})
    if as_json:
        out.print_json(json.dumps(reports))
    for r in [] if as_json else reports:
        state = "[green]healthy[/green]" if r["healthy"] else "[red]problems[/red]"
        out.print(f"{r['collection']}: {r['points']} points, {state}")
        for point in r["unreadable"]:
            out.print(f"  unreadable point {point}", highlight=False)
        for point, reason in r["malformed"].items():
            out.print(f"  malformed point {point}: {reason}", highlight=False, markup=False)
        if r["untenanted"]:
            out.print(f"  {r['untenanted']} points without a tenant (written before tenants)")
        for doc in r["inconsistent_documents"]:
            out.print(f"  inconsistent document {doc}", highlight=False, markup=False)
        if fix and not r["healthy"]:
            result = "healthy now" if r["healthy_now"] else "[red]still unhealthy[/red]"
            out.print(f"  fixed: removed {r['removed']} points; {result}")
    if not all(r["healthy_now"] for r in reports):
        raise typer.Exit(1)
