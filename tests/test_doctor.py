"""``ingest/doctor.py`` and ``grounded doctor``: points a collection cannot serve are found,
removed or stamped, and the healthy documents come through untouched.

The broken points are written with ``index.upsert`` directly, the way older versions (before
grounded validated metadata and stamped tenants) or a crash mid-ingest left them.
"""

from pathlib import Path
from typing import Any

import pytest
from support.cli_runner import grounded

from ingest.build import build_ingestor
from ingest.doctor import examine, repair
from ingest.documents import Document, point_id
from ingest.embedding import Embedder, SentenceTransformerEmbedder
from ingest.index import EdgeIndex, FieldFilter, IndexPoint, SearchQuery, VectorIndex
from ingest.index.process import ProcessIndex
from ingest.settings import Settings
from ingest.sparse import Bm25Encoder

HEALTHY = [
    Document(
        "glaciers",
        " ".join(
            f"Glacier {n} retreats a little further every summer as the climate warms, "
            "leaving moraines and meltwater lakes behind it."
            for n in range(12)
        ),
        title="Glaciers",
    ),
    Document("plants", "Photosynthesis converts light, water and carbon dioxide into sugar."),
]
QUERY = "why do glaciers retreat"


def _nested(levels: int) -> dict[str, Any]:
    metadata: dict[str, Any] = {"leaf": True}
    for _ in range(levels - 1):
        metadata = {"inner": metadata}
    return metadata


def _ingest_healthy(index: VectorIndex, embedder: Embedder, tmp_path: Path) -> int:
    settings = Settings(data_dir=tmp_path / "unused", chunk_size=48, chunk_overlap=8)
    report = build_ingestor(settings, index, embedder, "kb").ingest(HEALTHY)
    assert report.added == 2 and report.chunks_written > 2  # "glaciers" has several chunks
    return report.chunks_written


def _point(
    index: VectorIndex,
    embedder: Embedder,
    doc_id: str,
    chunk: int = 0,
    count: int = 1,
    **changes: Any,
) -> IndexPoint:
    """A chunk the way grounded writes it, with ``changes`` (a value of None drops the field)."""
    manifest = index.manifest("kb")
    assert manifest is not None
    text = f"Stray chunk {chunk} of {doc_id}."
    payload: dict[str, Any] = {
        "tenant": "default",
        "doc_id": doc_id,
        "chunk_index": chunk,
        "chunk_count": count,
        "doc_hash": f"hash-{doc_id}",
        "text": text,
        "title": "",
        "headings": [],
        "source": f"/legacy/{doc_id}.txt",
        "start": 0,
        "end": len(text),
        "metadata": {},
    }
    payload.update(changes)
    payload = {k: v for k, v in payload.items() if v is not None}
    sparse = Bm25Encoder(manifest.bm25).embed_document(text)
    return IndexPoint(point_id(doc_id, chunk), embedder.embed_query(text), sparse, payload)


def _search(index: VectorIndex, embedder: Embedder, query: str, *filters: FieldFilter) -> list[Any]:
    manifest = index.manifest("kb")
    assert manifest is not None
    sparse = Bm25Encoder(manifest.bm25).embed_query(query)
    request = SearchQuery(
        dense=embedder.embed_query(query), sparse=sparse, mode="dense", limit=4, filters=filters
    )
    return [(hit.id, hit.payload) for hit in index.search("kb", request)]


def _healthy_hits(index: VectorIndex, embedder: Embedder) -> list[Any]:
    only_healthy = FieldFilter("doc_id", any=tuple(d.id for d in HEALTHY))
    return _search(index, embedder, QUERY, only_healthy)


def _break(index: VectorIndex, embedder: Embedder) -> dict[str, Any]:
    """Write one point per kind of problem the doctor knows; returns their ids."""
    bad: dict[str, IndexPoint | list[IndexPoint]] = {
        # Past grounded's depth limit (8) but within what both engines store and return.
        "nested": _point(index, embedder, "nested", metadata=_nested(20)),
        "no_hash": _point(index, embedder, "no-hash", doc_hash=None),
        "legacy": _point(index, embedder, "legacy", tenant=None),
        # Chunks 0 and 2 of 3: chunk 1 never arrived.
        "gap": [_point(index, embedder, "gappy", i, 3) for i in (0, 2)],
    }
    for points in bad.values():
        index.upsert("kb", points if isinstance(points, list) else [points])
    index.flush("kb")
    return {
        name: sorted(p.id for p in points) if isinstance(points, list) else points.id
        for name, points in bad.items()
    }


def test_examine_and_repair_every_kind_of_problem(
    index: VectorIndex, embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    chunks = _ingest_healthy(index, embedder, tmp_path)
    healthy = examine(index, "kb")
    assert healthy.healthy and healthy.points == chunks and healthy.to_dict()["healthy"]
    before = _healthy_hits(index, embedder)
    assert before[0][1]["doc_id"] == "glaciers"

    ids = _break(index, embedder)
    legacy_only = FieldFilter("doc_id", value="legacy")
    assert _search(index, embedder, "stray chunk", legacy_only) == []  # no tenant: unreachable

    report = examine(index, "kb")
    assert not report.healthy and report.points == chunks + 5
    assert report.unreadable == []
    assert report.malformed == {
        ids["nested"]: "metadata" + ".inner" * 8 + " nests deeper than 8 levels",
        ids["no_hash"]: "payload field 'doc_hash' is missing or not str",
    }
    assert report.untenanted == [ids["legacy"]]
    assert {k: sorted(v) for k, v in report.inconsistent.items()} == {"default/gappy": ids["gap"]}
    summary = report.to_dict()
    assert (summary["untenanted"], summary["inconsistent_documents"]) == (1, ["default/gappy"])

    assert repair(index, report) == 4
    again = examine(index, "kb")
    assert again.healthy and again.points == chunks + 1, again.to_dict()
    assert index.payloads("kb", [ids["legacy"]])[ids["legacy"]]["tenant"] == "default"
    assert [h[1]["doc_id"] for h in _search(index, embedder, "stray chunk", legacy_only)] == [
        "legacy"
    ]
    assert _healthy_hits(index, embedder) == before


def test_metadata_past_the_engine_limit(
    index: VectorIndex, embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    """130 levels: Qdrant Edge stores the point but cannot decode its payload again, so every
    search that reaches it fails; qdrant-client's local mode returns it (the depth check then
    calls it malformed). Either way the doctor must remove it."""
    chunks = _ingest_healthy(index, embedder, tmp_path)
    before = _healthy_hits(index, embedder)
    deep = _point(index, embedder, "deep", metadata=_nested(130))
    index.upsert("kb", [deep])

    report = examine(index, "kb")
    assert report.points == chunks + 1 and not report.healthy
    if isinstance(index, EdgeIndex | ProcessIndex):  # the fixture's ProcessIndex serves Edge
        assert (report.unreadable, report.malformed) == ([deep.id], {})
        with pytest.raises(Exception, match="recursion limit"):
            _search(index, embedder, "stray chunk")  # unfiltered: reaches the deep point
    else:
        assert report.unreadable == [] and "nests deeper than 8 levels" in report.malformed[deep.id]

    assert repair(index, report) == 1
    assert examine(index, "kb").healthy
    assert _healthy_hits(index, embedder) == before
    assert "deep" not in {h[1]["doc_id"] for h in _search(index, embedder, "stray chunk")}


# the command ---------------------------------------------------------------------------------
def _broken_data_dir(data: Path, embedder: Embedder, tmp_path: Path, deep: bool) -> dict[str, Any]:
    index = EdgeIndex(data)
    try:
        _ingest_healthy(index, embedder, tmp_path)
        if deep:
            point = _point(index, embedder, "deep", metadata=_nested(130))
            index.upsert("kb", [point])
        ids = _break(index, embedder)
        return {**ids, "deep": point.id} if deep else ids
    finally:
        index.close()


def test_grounded_doctor_reports_fixes_and_then_passes(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    data = tmp_path / "data"
    ids = _broken_data_dir(data, embedder, tmp_path, deep=False)

    found = grounded("doctor", "--data-dir", str(data), data_dir=tmp_path / "elsewhere", check_rc=1)
    assert "kb: " in found.stdout and "problems" in found.stdout
    assert f"malformed point {ids['nested']}: metadata." in found.stdout
    assert f"malformed point {ids['no_hash']}: payload field 'doc_hash'" in found.stdout
    assert "1 points without a tenant" in found.stdout
    assert "inconsistent document default/gappy" in found.stdout

    fixed = grounded("doctor", "--fix", "--data-dir", str(data), data_dir=tmp_path / "elsewhere")
    assert "fixed: removed 4 points" in fixed.stdout

    after = grounded("doctor", "--data-dir", str(data), data_dir=tmp_path / "elsewhere")
    assert "kb: " in after.stdout and "healthy" in after.stdout and "problems" not in after.stdout


def test_grounded_doctor_fixes_an_unreadable_point(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    data = tmp_path / "data"
    ids = _broken_data_dir(data, embedder, tmp_path, deep=True)
    found = grounded("doctor", "--data-dir", str(data), data_dir=data, check_rc=1)
    assert f"unreadable point {ids['deep']}" in found.stdout
    fixed = grounded("doctor", "--fix", "--data-dir", str(data), data_dir=data, check_rc=None)
    assert fixed.returncode == 0 and "Traceback" not in fixed.stderr, fixed.stderr
    assert "fixed: removed 5 points" in fixed.stdout
    grounded("doctor", "--data-dir", str(data), data_dir=data)


def test_grounded_doctor_explains_a_shard_it_cannot_load(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    data = tmp_path / "data"
    index = EdgeIndex(data)
    try:
        _ingest_healthy(index, embedder, tmp_path)
        index.upsert("kb", [_point(index, embedder, "deep", metadata=_nested(130))])
        index.flush("kb")
    finally:
        index.close()
    found = grounded("doctor", "--data-dir", str(data), data_dir=data, check_rc=None)
    assert found.returncode == 1 and "Traceback" not in found.stderr, found.stderr
    assert "'kb'" in found.stderr
