"""``grounded doctor``: find (and with ``fix``, remove) points a collection cannot serve.

It reads every point's payload and reports:

- **unreadable** points: the engine cannot return their payload (e.g. metadata nested past the
  engine's recursion limit, written before grounded refused it), so every search that hits them
  fails;
- **malformed** points: a payload without the fields grounded writes, or metadata that breaks the
  limits;
- **untenanted** points: written before tenants existed; ``fix`` stamps the default tenant;
- **inconsistent documents**: a document whose chunks are not exactly one version's full set
  (mixed hashes, gaps, wrong count), e.g. after a crash that was never re-run. ``fix`` removes
  their points; the next ingest writes them again whole.

Example::

    report = examine(index, "kb")
    if not report.healthy:
        repair(index, report)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .documents import check_metadata
from .index import DocState, IndexPoint, IndexProblem, VectorIndex, require_manifest
from .names import DEFAULT_TENANT
from .payload import TENANT, payload_problem
from .sparse import SparseVec

_PAGE = 256


@dataclass
class CollectionReport:
    collection: str
    points: int = 0
    unreadable: list[str] = field(default_factory=list)
    malformed: dict[str, str] = field(default_factory=dict)  # point id -> reason
    untenanted: list[str] = field(default_factory=list)
    inconsistent: dict[str, list[str]] = field(default_factory=dict)  # "tenant/doc" -> ids

    @property
    def healthy(self) -> bool:
        return not (self.unreadable or self.malformed or self.untenanted or self.inconsistent)

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "points": self.points,
            "unreadable": self.unreadable,
            "malformed": self.malformed,
            "untenanted": len(self.untenanted),
            "inconsistent_documents": sorted(self.inconsistent),
            "healthy": self.healthy,
        }


def read_payloads(
    index: VectorIndex, collection: str, ids: Sequence[str]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Payloads of ``ids`` and the ids whose payload cannot be read (found by bisection, so a
    healthy collection costs one call per page)."""
    try:
        return index.payloads(collection, ids), []
    except Exception:  # the engine's error type differs per adapter; any failure is the point's
        if len(ids) == 1:
            return {}, list(ids)
    half = len(ids) // 2
    left, bad_left = read_payloads(index, collection, ids[:half])
    right, bad_right = read_payloads(index, collection, ids[half:])
    return {**left, **right}, bad_left + bad_right


def _malformed(payload: dict[str, Any], max_depth: int, max_bytes: int) -> str | None:
    problem = payload_problem(payload)
    if problem:
        return problem
    try:
        check_metadata(payload.get("metadata") or {}, max_depth=max_depth, max_bytes=max_bytes)
    except ValueError as exc:
        return str(exc)
    return None


def examine(
    index: VectorIndex, collection: str, *, max_depth: int = 8, max_bytes: int = 16_384
) -> CollectionReport:
    report = CollectionReport(collection)
    ids = index.point_ids(collection)
    report.points = len(ids)
    docs: dict[str, tuple[DocState, list[str]]] = {}
    for start in range(0, len(ids), _PAGE):
        page = ids[start : start + _PAGE]
        payloads, unreadable = read_payloads(index, collection, page)
        if len(page) > 1 and len(unreadable) == len(page):
            # Not one point of a page could be read: the engine is failing, not the points.
            raise IndexProblem(
                f"cannot read collection {collection!r}: every point of a page failed "
                "(is the server reachable?); nothing was changed"
            )
        report.unreadable += unreadable
        for point, payload in payloads.items():
            problem = _malformed(payload, max_depth, max_bytes)
            if problem:
                report.malformed[point] = problem
                continue
            if TENANT not in payload:
                report.untenanted.append(point)
            key = f"{payload.get(TENANT, DEFAULT_TENANT)}/{payload['doc_id']}"
            state, members = docs.setdefault(key, (DocState(), []))
            state.add(payload)
            members.append(point)
    for key, (state, members) in docs.items():
        hashes = sorted(state.hashes)
        if len(hashes) != 1 or not state.is_current(hashes[0]):
            report.inconsistent[key] = members
    return report


def repair(index: VectorIndex, report: CollectionReport) -> int:
    """Remove what :func:`examine` found unservable and stamp untenanted points; returns the
    number of points removed."""
    # Qdrant Edge reads a point's old payload to delete it: overwrite the undecodable ones
    # with an empty payload first, then they delete like any other point.
    if report.unreadable:
        dimension = require_manifest(index, report.collection).dimension
        placeholder = [1.0] + [0.0] * (dimension - 1)
        index.upsert(
            report.collection,
            [IndexPoint(p, placeholder, SparseVec([], []), {}) for p in report.unreadable],
        )
    doomed = set(report.unreadable) | set(report.malformed)
    for members in report.inconsistent.values():
        doomed.update(members)
    stamp = [p for p in report.untenanted if p not in doomed]
    ordered = sorted(doomed)
    for start in range(0, len(ordered), _PAGE):
        index.delete_points(report.collection, ordered[start : start + _PAGE])
    index.set_tenant(report.collection, stamp, DEFAULT_TENANT)
    index.flush(report.collection)
    return len(ordered)
