"""Copy a collection from one Qdrant store to another (``grounded migrate``).

Usually from the embedded Edge store in ``data_dir`` to a Qdrant server or cluster. The target
collection is created with the source's :class:`~ingest.index.Manifest`, so the target's
cluster layout (:class:`~ingest.index.server.ClusterParams`) applies, and then every point is
copied as it is stored: same id, dense and BM25 vectors, payload. Nothing is re-embedded.

**Resumable.** After each batch a :class:`Checkpoint` (the next scroll offset and the counts so
far) replaces the JSON file atomically, and a re-run continues from it. A batch is written
before its checkpoint, so a crash between the two writes that batch again on the next run:
upserting the same ids again changes nothing, so there are never duplicates.

**Verified.** The run ends by comparing exact point counts (per collection and per tenant), a
seeded sample of points field by field, and the top 10 of one query per sampled point (its
chunk's text) on both sides. Exact dense search must agree. The hybrid overlap is reported but
not enforced: Qdrant computes BM25's IDF per shard, so on a sharded cluster hybrid scores can
legitimately differ (docs/scaling.md).

Example::

    report = migrate(EdgeIndex(Path("data")), ServerIndex.connect(url), "docs",
                     Path("data/migrations/docs.json"), target_label=url)
    report.total_copied, report.dense_identical, report.hybrid_overlap
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .embedding import Embedder
from .index import (
    Hit,
    IndexPoint,
    IndexProblem,
    Manifest,
    SearchQuery,
    VectorIndex,
    require_manifest,
)
from .names import DEFAULT_TENANT
from .payload import TENANT
from .sparse import Bm25Encoder

VERIFY_TOP_K = 10
# The target normalises the (already normalised) cosine vectors again, so stored vectors and
# scores agree to float rounding, not bit for bit.
VECTOR_TOLERANCE = 1e-5
SCORE_TOLERANCE = 1e-4


class MigrationError(IndexProblem):
    """The migration cannot start or go on; the message says why and what to do."""


class MigrationMismatch(MigrationError):
    """The copy finished but the target does not match the source; ``report`` says where."""

    def __init__(self, report: MigrationReport) -> None:
        super().__init__(
            f"collection {report.collection!r} on the target does not match the source: "
            + "; ".join(report.problems[:5])
            + (f" (and {len(report.problems) - 5} more)" if len(report.problems) > 5 else "")
        )
        self.report = report


@dataclass
class Checkpoint:
    """How far a migration got: enough to resume it, and to refuse resuming another one."""

    collection: str
    target: str
    source_created_at: str  # a re-created source collection is another collection
    next_offset: str | None = None
    copied: int = 0
    batches: int = 0
    tenants: dict[str, int] = field(default_factory=dict)
    done: bool = False

    def advance(self, points: Sequence[IndexPoint], next_offset: str | None) -> None:
        self.copied += len(points)
        self.batches += 1
        self.next_offset = next_offset
        self.done = next_offset is None
        for point in points:
            tenant = point.payload.get(TENANT)
            if tenant is not None:  # untenanted points (before tenants) have no partition
                self.tenants[str(tenant)] = self.tenants.get(str(tenant), 0) + 1

    def save(self, path: Path) -> None:
        """Replace the file atomically: a crash leaves the old checkpoint or this one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w") as handle:
            json.dump(asdict(self), handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Checkpoint | None:
        if not path.is_file():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise MigrationError(
                f"checkpoint {path} cannot be read ({exc}); run again with --restart"
            ) from None


@dataclass
class MigrationReport:
    """What a run copied and what the verification found (``problems`` empty = identical)."""

    collection: str
    target: str
    resumed_from: int = 0  # points copied by earlier, interrupted runs
    copied: int = 0  # points this run wrote
    total_copied: int = 0
    batches: int = 0
    source_points: int = 0
    target_points: int = 0
    tenants: dict[str, dict[str, int]] = field(default_factory=dict)  # {"source", "target"}
    points_compared: int = 0
    points_identical: int = 0
    queries: int = 0
    dense_identical: int = 0  # queries whose exact dense top 10 is the same on both sides
    hybrid_overlap: float = 1.0  # mean share of the hybrid top 10 found on both sides
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "seconds": round(self.seconds, 3)}


BatchFn = Callable[[Checkpoint], None]
"""Called after each batch is written and checkpointed."""


def migrate(
    source: VectorIndex,
    target: VectorIndex,
    collection: str,
    checkpoint_path: Path,
    *,
    target_label: str = "",
    batch_size: int = 256,
    verify_queries: int = 20,
    restart: bool = False,
    defer_indexing: bool = True,
    embedder: Embedder | None = None,
    seed: int = 0,
    on_batch: BatchFn | None = None,
) -> MigrationReport:
    """Copy ``collection`` from ``source`` to ``target``, resuming from ``checkpoint_path``,
    then verify it; raises :class:`MigrationMismatch` when the target differs.

    Args:
        target_label: names the target in the checkpoint (its URL), so a checkpoint is never
            resumed against another target.
        batch_size: points per scroll and upsert (Qdrant advises 64-256 per request).
        verify_queries: points sampled for the point and query comparisons (0 = counts only).
        restart: ignore an existing checkpoint and copy from the first point.
        defer_indexing: write under :meth:`~ingest.index.VectorIndex.bulk_load`.
        embedder: embeds the sampled texts as dense queries; without it, the sampled chunk's
            own stored vector is the dense query (no model to load, just as good a comparison).
        seed: the sample's seed, so a re-run compares the same points.
        on_batch: progress callback.
    """
    if batch_size <= 0 or verify_queries < 0:
        raise ValueError("batch_size must be > 0 and verify_queries >= 0")
    started = time.perf_counter()
    manifest, created = prepare_target(source, target, collection)
    if embedder is not None:
        manifest.check_model(collection, embedder.name, embedder.dimension)
    checkpoint = start_checkpoint(
        checkpoint_path, collection, target_label, manifest, restart=restart or created
    )
    report = MigrationReport(collection, target_label, resumed_from=checkpoint.copied)
    if not checkpoint.done:
        copy_points(
            source,
            target,
            collection,
            checkpoint,
            checkpoint_path,
            batch_size=batch_size,
            defer_indexing=defer_indexing,
            on_batch=on_batch,
        )
    report.copied = checkpoint.copied - report.resumed_from
    report.total_copied, report.batches = checkpoint.copied, checkpoint.batches
    verify(
        source,
        target,
        collection,
        report,
        tenants=sorted(checkpoint.tenants),
        queries=verify_queries,
        seed=seed,
        embedder=embedder,
    )
    report.seconds = time.perf_counter() - started
    if not report.ok:
        raise MigrationMismatch(report)
    return report


# Before the copy ------------------------------------------------------------------------------
def prepare_target(
    source: VectorIndex, target: VectorIndex, collection: str
) -> tuple[Manifest, bool]:
    """The source's manifest, and whether the target collection was created just now (it is
    when missing; an existing one must have been built the same way)."""
    manifest = source.manifest(collection)
    if manifest is None:
        raise MigrationError(f"source collection {collection!r} does not exist: nothing to copy")
    existing = target.manifest(collection)
    if existing is None:
        target.create_collection(collection, manifest)
        return manifest, True
    differences = build_differences(existing, manifest)
    if differences:
        raise MigrationError(
            f"the target already has a collection {collection!r} built differently "
            f"({'; '.join(differences)}). Its points cannot be mixed with the source's: drop it "
            "on the target first, or migrate into a target without it."
        )
    return manifest, False


def build_differences(target: Manifest, source: Manifest) -> list[str]:
    """What makes two collections' points incomparable (the creation time does not)."""
    fields = {
        "embedding model": (target.model, source.model),
        "dimension": (target.dimension, source.dimension),
        "BM25 parameters": (target.bm25, source.bm25),
        "chunker": (target.chunker, source.chunker),
    }
    return [
        f"{name} {theirs!r} on the target, {ours!r} in the source"
        for name, (theirs, ours) in fields.items()
        if theirs != ours
    ]


def start_checkpoint(
    path: Path, collection: str, target: str, manifest: Manifest, *, restart: bool
) -> Checkpoint:
    """The checkpoint to resume, or a fresh one when restarting or none exists."""
    fresh = Checkpoint(collection, target, manifest.created_at)
    saved = None if restart else Checkpoint.load(path)
    if saved is None:
        return fresh
    if (saved.collection, saved.target) != (collection, target):
        raise MigrationError(
            f"checkpoint {path} belongs to a migration of {saved.collection!r} to "
            f"{saved.target!r}; run again with --restart to start this one from the beginning"
        )
    if saved.source_created_at != manifest.created_at:
        raise MigrationError(
            f"the source collection {collection!r} was re-created since checkpoint {path} was "
            "written; run again with --restart"
        )
    return saved


# The copy -------------------------------------------------------------------------------------
def copy_points(
    source: VectorIndex,
    target: VectorIndex,
    collection: str,
    checkpoint: Checkpoint,
    path: Path,
    *,
    batch_size: int,
    defer_indexing: bool,
    on_batch: BatchFn | None = None,
) -> None:
    """Scroll the source from the checkpoint's offset and upsert each page into the target."""
    with target.bulk_load(collection) if defer_indexing else nullcontext():
        while not checkpoint.done:
            points, next_offset = source.scroll_points(
                collection, checkpoint.next_offset, batch_size
            )
            target.upsert(collection, points)
            checkpoint.advance(points, next_offset)
            # Only after the write: a crash before this line re-writes the batch, harmlessly.
            checkpoint.save(path)
            if on_batch is not None:
                on_batch(checkpoint)
    target.flush(collection)


# The verification -----------------------------------------------------------------------------
def verify(
    source: VectorIndex,
    target: VectorIndex,
    collection: str,
    report: MigrationReport,
    *,
    tenants: Sequence[str],
    queries: int,
    seed: int,
    embedder: Embedder | None = None,
) -> None:
    """Compare the two sides; each difference becomes one of ``report.problems``."""
    manifest = require_manifest(source, collection)
    check_counts(source, target, collection, tenants, report)
    sample = sample_points(source, collection, queries, seed)
    compare_points(target, collection, sample, report)
    compare_searches(source, target, collection, manifest, sample, embedder, report)


def check_counts(
    source: VectorIndex,
    target: VectorIndex,
    collection: str,
    tenants: Sequence[str],
    report: MigrationReport,
) -> None:
    report.source_points = source.count(collection)
    report.target_points = target.count(collection)
    if report.source_points != report.target_points:
        report.problems.append(
            f"{report.source_points} points in the source, {report.target_points} on the "
            "target (did the source change during the copy? run again with --restart)"
        )
    for tenant in tenants:
        counts = {
            "source": source.count(collection, tenant),
            "target": target.count(collection, tenant),
        }
        report.tenants[tenant] = counts
        if counts["source"] != counts["target"]:
            report.problems.append(
                f"tenant {tenant!r}: {counts['source']} points in the source, "
                f"{counts['target']} on the target"
            )


def fetch_point(index: VectorIndex, collection: str, point_id: str) -> IndexPoint | None:
    """One whole point by id: a scroll page of one that starts at it (offsets are inclusive)."""
    points, _ = index.scroll_points(collection, point_id, 1)
    return points[0] if points and points[0].id == point_id else None


def sample_points(source: VectorIndex, collection: str, size: int, seed: int) -> list[IndexPoint]:
    """``size`` points drawn with ``seed`` from every id (ids only: a few MB per 100k points)."""
    ids = sorted(source.point_ids(collection))
    chosen = random.Random(seed).sample(ids, min(size, len(ids)))
    return [p for p in (fetch_point(source, collection, i) for i in chosen) if p is not None]


def same_point(a: IndexPoint, b: IndexPoint) -> bool:
    if a.payload != b.payload or len(a.dense) != len(b.dense):
        return False
    if any(abs(x - y) > VECTOR_TOLERANCE for x, y in zip(a.dense, b.dense, strict=True)):
        return False
    # Compared as maps: an engine may return the indices in another order.
    sparse_a = dict(zip(a.sparse.indices, a.sparse.values, strict=True))
    sparse_b = dict(zip(b.sparse.indices, b.sparse.values, strict=True))
    return sparse_a.keys() == sparse_b.keys() and all(
        abs(v - sparse_b[k]) <= VECTOR_TOLERANCE for k, v in sparse_a.items()
    )


def compare_points(
    target: VectorIndex, collection: str, sample: Sequence[IndexPoint], report: MigrationReport
) -> None:
    for point in sample:
        copy = fetch_point(target, collection, point.id)
        report.points_compared += 1
        if copy is None:
            report.problems.append(f"point {point.id} is missing on the target")
        elif not same_point(point, copy):
            report.problems.append(f"point {point.id} differs on the target")
        else:
            report.points_identical += 1


def rankings_agree(a: Sequence[Hit], b: Sequence[Hit]) -> bool:
    """Same scores rank by rank and the same ids, except in order among tied scores and in the
    group tied at the cut-off, where which of the tied points made the top k is arbitrary."""
    if len(a) != len(b):
        return False
    if any(abs(x.score - y.score) > SCORE_TOLERANCE for x, y in zip(a, b, strict=True)):
        return False
    if not a:
        return True
    cutoff = a[-1].score

    def above(hits: Sequence[Hit]) -> set[str]:
        return {h.id for h in hits if h.score - cutoff > SCORE_TOLERANCE}

    return above(a) == above(b)


def overlap(a: Sequence[Hit], b: Sequence[Hit]) -> float:
    size = max(len(a), len(b))
    return len({h.id for h in a} & {h.id for h in b}) / size if size else 1.0


def compare_searches(
    source: VectorIndex,
    target: VectorIndex,
    collection: str,
    manifest: Manifest,
    sample: Sequence[IndexPoint],
    embedder: Embedder | None,
    report: MigrationReport,
) -> None:
    """One query per sampled point, its chunk's text, in that point's tenant: exact dense
    search must agree; the hybrid overlap is measured."""
    bm25 = Bm25Encoder(manifest.bm25)
    overlaps = []
    for point in sample:
        text = str(point.payload.get("text", ""))
        dense = embedder.embed_query(text) if embedder is not None else point.dense
        query = SearchQuery(
            dense=dense,
            sparse=bm25.embed_query(text),
            mode="dense",
            limit=VERIFY_TOP_K,
            tenant=str(point.payload.get(TENANT, DEFAULT_TENANT)),
            exact=True,  # HNSW is approximate, and each side's graph is its own
        )
        report.queries += 1
        if rankings_agree(source.search(collection, query), target.search(collection, query)):
            report.dense_identical += 1
        else:
            report.problems.append(f"the dense top {VERIFY_TOP_K} differs for point {point.id}")
        hybrid = replace(query, mode="hybrid")
        overlaps.append(
            overlap(source.search(collection, hybrid), target.search(collection, hybrid))
        )
    if overlaps:
        report.hybrid_overlap = sum(overlaps) / len(overlaps)
