"""``grounded migrate``: a collection copied from the embedded Edge store to a server (qdrant-client
local mode here), resumed after a crash without duplicates, verified, and refused when it cannot
be copied faithfully."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from qdrant_client import QdrantClient
from typer.testing import CliRunner

from ingest.build import build_ingestor
from ingest.embedding import Embedder
from ingest.index import EdgeIndex, Manifest, SearchQuery, VectorIndex
from ingest.index.base import Mode
from ingest.index.server import ServerIndex
from ingest.loaders import Document as LoadedDocument
from ingest.loaders import iter_documents
from ingest.migrate import (
    Checkpoint,
    MigrationError,
    MigrationMismatch,
    fetch_point,
    migrate,
)
from ingest.settings import Settings
from ingest.sparse import Bm25Encoder, Bm25Params

# Local mode's exactness warning: verification asks both sides for exact search.
pytestmark = pytest.mark.filterwarnings("ignore:Local mode performs exact:UserWarning")

CORPUS = Path(__file__).parent / "fixtures" / "mini_beir" / "corpus.jsonl"
TENANTS = ("default", "acme")
BATCH = 5


class Interrupted(Exception):
    """Stands in for a crash (kill, lost connection) in the middle of a migration."""


def _fill(index: VectorIndex, embedder: Embedder) -> None:
    docs = [d for d in iter_documents([CORPUS]) if isinstance(d, LoadedDocument)]
    for tenant in TENANTS:
        build_ingestor(Settings(), index, embedder, "kb", tenant=tenant).ingest(docs)


@pytest.fixture
def data_dir(tmp_path: Path, embedder: Embedder) -> Path:
    """A data directory whose embedded store holds ``kb``: the corpus once per tenant."""
    data = tmp_path / "data"
    edge = EdgeIndex(data)
    try:
        _fill(edge, embedder)
    finally:
        edge.close()
    return data


@pytest.fixture
def source(data_dir: Path) -> Iterator[EdgeIndex]:
    edge = EdgeIndex(data_dir)
    yield edge
    edge.close()


@pytest.fixture
def target() -> Iterator[ServerIndex]:
    server = ServerIndex(QdrantClient(":memory:"))
    yield server
    server.close()


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return tmp_path / "data" / "migrations" / "kb.json"


def _interrupt_after(batches: int) -> Any:
    def on_batch(state: Checkpoint) -> None:
        if state.batches == batches:
            raise Interrupted

    return on_batch


# the copy -----------------------------------------------------------------------------------
def test_migrate_copies_every_point_as_it_is_and_verifies(
    source: EdgeIndex, target: ServerIndex, checkpoint: Path, embedder: Embedder
) -> None:
    total = source.count("kb")
    assert total == 2 * len(list(iter_documents([CORPUS])))

    report = migrate(
        source, target, "kb", checkpoint, batch_size=BATCH, verify_queries=8, embedder=embedder
    )

    assert report.ok and report.problems == []
    assert (report.copied, report.total_copied, report.resumed_from) == (total, total, 0)
    assert report.batches == -(-total // BATCH)
    assert report.source_points == report.target_points == target.count("kb") == total
    half = total // 2
    assert report.tenants == {t: {"source": half, "target": half} for t in TENANTS}
    assert report.points_identical == report.points_compared == 8
    assert report.dense_identical == report.queries == 8
    assert report.hybrid_overlap == 1.0  # one shard: the same IDF statistics on both sides
    assert target.manifest("kb") == source.manifest("kb")
    assert json.loads(checkpoint.read_text())["done"] is True


def test_migrated_points_and_searches_are_identical(
    source: EdgeIndex, target: ServerIndex, checkpoint: Path, embedder: Embedder
) -> None:
    migrate(source, target, "kb", checkpoint, batch_size=BATCH, verify_queries=0)
    ids = sorted(source.point_ids("kb"))
    assert sorted(target.point_ids("kb")) == ids
    for point_id in ids[::4]:
        ours, theirs = fetch_point(source, "kb", point_id), fetch_point(target, "kb", point_id)
        assert ours is not None and theirs is not None
        assert theirs.payload == ours.payload
        assert list(theirs.dense) == pytest.approx(list(ours.dense), abs=1e-6)
        assert dict(zip(theirs.sparse.indices, theirs.sparse.values, strict=True)) == pytest.approx(
            dict(zip(ours.sparse.indices, ours.sparse.values, strict=True))
        )
    text = "How do bees find flowers?"
    manifest = source.manifest("kb")
    assert manifest is not None
    bm25 = Bm25Encoder(manifest.bm25)
    for tenant in TENANTS:
        modes: tuple[Mode, ...] = ("dense", "sparse", "hybrid")
        for mode in modes:
            query = SearchQuery(
                dense=embedder.embed_query(text),
                sparse=bm25.embed_query(text),
                mode=mode,
                limit=5,
                tenant=tenant,
            )
            ours_hits, theirs_hits = source.search("kb", query), target.search("kb", query)
            assert [h.id for h in theirs_hits] == [h.id for h in ours_hits]
            assert {h.payload["tenant"] for h in theirs_hits} == {tenant}


# resuming -----------------------------------------------------------------------------------
def test_an_interrupted_migration_resumes_where_it_stopped(
    source: EdgeIndex, target: ServerIndex, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    total = source.count("kb")
    with pytest.raises(Interrupted):
        migrate(source, target, "kb", checkpoint, batch_size=BATCH, on_batch=_interrupt_after(1))
    saved = Checkpoint.load(checkpoint)
    assert saved is not None and (saved.copied, saved.batches, saved.done) == (BATCH, 1, False)
    assert target.count("kb") == BATCH

    offsets: list[str | None] = []
    scroll = source.scroll_points

    def recording_scroll(collection: str, offset: str | None = None, limit: int = 256) -> Any:
        offsets.append(offset)
        return scroll(collection, offset, limit)

    monkeypatch.setattr(source, "scroll_points", recording_scroll)
    report = migrate(source, target, "kb", checkpoint, batch_size=BATCH, verify_queries=4)

    assert offsets[0] == saved.next_offset is not None  # not from zero
    assert (report.resumed_from, report.copied, report.total_copied) == (
        BATCH,
        total - BATCH,
        total,
    )
    assert target.count("kb") == total == len(set(target.point_ids("kb")))
    assert report.ok


def test_a_crash_between_a_write_and_its_checkpoint_leaves_no_duplicates(
    source: EdgeIndex, target: ServerIndex, checkpoint: Path
) -> None:
    total = source.count("kb")
    after_first: dict[str, str] = {}

    def crash_before_second_checkpoint_lands(state: Checkpoint) -> None:
        if state.batches == 1:
            after_first["text"] = checkpoint.read_text()
        if state.batches == 2:
            # batch 2 is on the target, but the crash loses its checkpoint
            checkpoint.write_text(after_first["text"])
            raise Interrupted

    with pytest.raises(Interrupted):
        migrate(
            source,
            target,
            "kb",
            checkpoint,
            batch_size=BATCH,
            on_batch=crash_before_second_checkpoint_lands,
        )
    assert target.count("kb") == 2 * BATCH

    report = migrate(source, target, "kb", checkpoint, batch_size=BATCH, verify_queries=4)
    assert (report.resumed_from, report.copied) == (BATCH, total - BATCH)  # batch 2 written again
    assert target.count("kb") == total == len(set(target.point_ids("kb")))
    assert report.ok


def test_restart_ignores_the_checkpoint(
    source: EdgeIndex, target: ServerIndex, checkpoint: Path
) -> None:
    with pytest.raises(Interrupted):
        migrate(source, target, "kb", checkpoint, batch_size=BATCH, on_batch=_interrupt_after(2))
    report = migrate(
        source, target, "kb", checkpoint, batch_size=BATCH, verify_queries=2, restart=True
    )
    assert (report.resumed_from, report.copied) == (0, source.count("kb"))
    assert target.count("kb") == source.count("kb")


def test_a_re_created_target_collection_is_copied_from_the_start(
    source: EdgeIndex, target: ServerIndex, checkpoint: Path
) -> None:
    with pytest.raises(Interrupted):
        migrate(source, target, "kb", checkpoint, batch_size=BATCH, on_batch=_interrupt_after(2))
    target.drop_collection("kb")
    report = migrate(source, target, "kb", checkpoint, batch_size=BATCH, verify_queries=2)
    assert report.resumed_from == 0 and report.ok


def test_a_checkpoint_is_never_resumed_against_another_target(
    source: EdgeIndex, target: ServerIndex, checkpoint: Path
) -> None:
    with pytest.raises(Interrupted):
        migrate(source, target, "kb", checkpoint, target_label="http://a:6333", batch_size=BATCH,
                on_batch=_interrupt_after(1))  # fmt: skip
    with pytest.raises(MigrationError, match=r"http://a:6333.*--restart"):
        migrate(source, target, "kb", checkpoint, target_label="http://b:6333")


# refusals and mismatches --------------------------------------------------------------------
def test_a_target_collection_built_differently_is_refused(
    source: EdgeIndex, target: ServerIndex, checkpoint: Path
) -> None:
    target.create_collection("kb", Manifest("another-model", 768, Bm25Params(), "other"))
    with pytest.raises(MigrationError, match="built differently") as refused:
        migrate(source, target, "kb", checkpoint)
    assert "embedding model 'another-model'" in str(refused.value)
    assert "dimension 768" in str(refused.value)
    assert target.count("kb") == 0 and not checkpoint.exists()


def test_a_missing_source_collection_is_refused(
    source: EdgeIndex, target: ServerIndex, checkpoint: Path
) -> None:
    with pytest.raises(MigrationError, match="source collection 'nope' does not exist"):
        migrate(source, target, "nope", checkpoint)
    assert target.list_collections() == []


def test_a_target_that_lost_points_fails_verification(
    source: EdgeIndex, target: ServerIndex, checkpoint: Path
) -> None:
    migrate(source, target, "kb", checkpoint, batch_size=BATCH, verify_queries=0)
    lost = sorted(target.point_ids("kb"))[:2]
    target.delete_points("kb", lost)
    # the copy is done, so the re-run only verifies
    with pytest.raises(MigrationMismatch, match="points in the source") as failed:
        migrate(source, target, "kb", checkpoint, verify_queries=len(lost) * 20)
    report = failed.value.report
    assert report.copied == 0 and report.target_points == report.source_points - 2
    assert not report.ok and report.points_identical < report.points_compared


# the command --------------------------------------------------------------------------------
@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[typer.Typer, list[Any]]:
    """``migrate`` on a throwaway app; ``--to`` opens a local-mode store kept on disk."""
    from service import migrate_cli

    connected: list[Any] = []

    def connect(url: str, api_key: str | None, settings: Settings) -> ServerIndex:
        connected.append((url, api_key))
        return ServerIndex(QdrantClient(path=str(tmp_path / "server")))

    monkeypatch.setattr(migrate_cli, "connect_target", connect)
    app = typer.Typer()
    app.command()(migrate_cli.migrate)
    app.command("noop")(lambda: None)  # two commands, so the app keeps the command name
    return app, connected


def _run(app: typer.Typer, *args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, ["migrate", *args], env={"COLUMNS": "200", **(env or {})})


def test_cli_migrates_resumes_and_reports(
    cli: tuple[typer.Typer, list[Any]], data_dir: Path
) -> None:
    app, connected = cli
    args = ("kb", "--to", "http://qdrant:6333", "--data-dir", str(data_dir), "--batch", "5")
    result = _run(app, *args, "--verify-queries", "4", "--json",
                  env={"GROUNDED_QDRANT_API_KEY": "s3cret"})  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["total_copied"] == report["source_points"] > 0
    assert connected == [("http://qdrant:6333", "s3cret")]
    assert (data_dir / "migrations" / "kb.json").is_file()

    table = _run(app, *args, "--verify-queries", "2")  # done already: verifies again
    assert table.exit_code == 0, table.output
    assert "migrate summary" in table.stdout and "0 points in this run" in table.stdout

    again = _run(app, *args, "--restart", "--json", "--verify-queries", "0")
    assert json.loads(again.stdout)["copied"] == report["source_points"]


@pytest.mark.parametrize(
    ("collection", "code", "message"),
    [("nope", 1, "source collection 'nope' does not exist"), ("../etc", 2, "invalid collection")],
)
def test_cli_errors_are_messages_not_tracebacks(
    cli: tuple[typer.Typer, list[Any]], data_dir: Path, collection: str, code: int, message: str
) -> None:
    app, _ = cli
    result = _run(app, collection, "--to", "http://qdrant:6333", "--data-dir", str(data_dir))
    assert result.exit_code == code
    assert message in " ".join(result.stderr.split())
    assert isinstance(result.exception, SystemExit)  # an exit with a message, not a crash


def test_cli_refuses_a_target_built_differently(
    cli: tuple[typer.Typer, list[Any]], data_dir: Path, tmp_path: Path
) -> None:
    app, _ = cli
    other = ServerIndex(QdrantClient(path=str(tmp_path / "server")))
    other.create_collection("kb", Manifest("another-model", 768, Bm25Params(), "other"))
    other.close()
    result = _run(app, "kb", "--to", "http://qdrant:6333", "--data-dir", str(data_dir))
    assert result.exit_code == 1
    assert "built differently" in " ".join(result.stderr.split())
    assert isinstance(result.exception, SystemExit)


@pytest.mark.filterwarnings("ignore:Failed to obtain server version:UserWarning")
def test_cli_explains_an_unreachable_server(data_dir: Path) -> None:
    from service import migrate_cli

    app = typer.Typer()
    app.command()(migrate_cli.migrate)
    app.command("noop")(lambda: None)
    # nothing listens on port 9 of the loopback: the connection is refused at once
    result = _run(app, "kb", "--to", "http://127.0.0.1:9", "--data-dir", str(data_dir))
    assert result.exit_code == 1, result.output
    assert "did not answer" in " ".join(result.stderr.split())
    assert isinstance(result.exception, SystemExit)
