"""Hostile inputs from the security review, and the helpers that check they changed nothing.

Shared by ``test_hostile.py`` (each attack on purpose, through every route that takes it) and
``test_fuzz.py`` (schemathesis, contained in the same kind of sandbox).

A sandbox is a temporary ``root`` that holds the data directory and everything an escaping
collection name could reach: ``root/jail/data`` is the data directory, ``root/jail/sibling`` a
second data directory (another deployment's, with a collection ``victim``), ``root/outside`` where
absolute names point. ``../../x`` from ``data/collections`` lands in ``root/jail``; an absolute
name is given as a path under ``root/outside`` (a stand-in for ``/some/dir``: tests run as root
on some machines, and an unfixed server would create the directory it is given).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ABSOLUTE = "<outside>"  # replaced by the sandbox's outside directory, see collection_name()

# Collection names that must be refused before anything touches the disk.
COLLECTION_NAMES: dict[str, str] = {
    "absolute": f"{ABSOLUTE}/some/dir",
    "dotdot": "../../x",
    "inner-dotdot": "kb/../kb2",
    "sibling": "../../sibling/collections/victim",
    "nul": "kb\x00x",
    "300-bytes": "k" * 300,
}


def collection_name(key: str, outside: Path) -> str:
    """The attack ``key`` of :data:`COLLECTION_NAMES`, with absolute paths inside ``outside``."""
    return COLLECTION_NAMES[key].replace(ABSOLUTE, str(outside))


def deep_object(levels: int) -> str:
    """``{"a": {"a": ... 1 ...}}`` nested ``levels`` deep, as raw JSON."""
    return '{"a": ' * levels + "1" + "}" * levels


INT64_MAX = 2**63 - 1
BEYOND_INT64 = 2**64

# Raw JSON for a document's ``metadata``: each must be refused with 422.
HOSTILE_METADATA: dict[str, str] = {
    "nested-130": deep_object(130),
    "NaN": '{"x": NaN}',
    "Infinity": '{"x": Infinity}',
    "-Infinity": '{"x": -Infinity}',
    "int-2**64": f'{{"x": {BEYOND_INT64}}}',
    "int-below-int64": f'{{"x": {-(2**63) - 1}}}',
    "nested-int-2**64": f'{{"a": [{{"b": {BEYOND_INT64}}}]}}',
}

# Raw JSON members added to a search / query / chat body: each must be refused with 422.
HOSTILE_SEARCH_OPTIONS: dict[str, str] = {
    "equality-int-2**64": f'"filters": {{"metadata.year": {BEYOND_INT64}}}',
    "any-int-2**64": f'"filters": {{"metadata.year": {{"any": [{BEYOND_INT64}]}}}}',
    "range-NaN": '"filters": {"metadata.year": {"gte": NaN}}',
    "mixed-any": '"filters": {"doc_id": {"any": ["bees", 1]}}',
    "key-metadata.": '"filters": {"metadata.": "x"}',
    "key-metadata..": '"filters": {"metadata..": "x"}',
    "key-with-NUL": '"filters": {"metadata.a\\u0000b": "x"}',
    "rrf_k-2**64": f'"rrf_k": {BEYOND_INT64}',
    "dense_weight-Infinity": '"dense_weight": Infinity',
}


def tree(root: Path, exclude: Path | None = None) -> dict[str, tuple[str, int, int]]:
    """Every entry under ``root`` (but not ``exclude``): relative path → (kind, size, mtime_ns).

    Two snapshots are equal when nothing was created, removed or written in between.
    """
    entries: dict[str, tuple[str, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if exclude is not None:
            dirnames[:] = [d for d in dirnames if here / d != exclude]
        for name in dirnames + filenames:
            path = here / name
            stat = path.lstat()
            kind = "dir" if name in dirnames else "file"
            size = 0 if kind == "dir" else stat.st_size
            entries[str(path.relative_to(root))] = (kind, size, stat.st_mtime_ns)
    return entries


def raw_json(members: Mapping[str, Any], *raw: str) -> bytes:
    """A JSON object of ``members`` plus ``raw`` members written as is (NaN, huge integers)."""
    inner = json.dumps(dict(members))[1:-1]
    return ("{" + ", ".join(p for p in (inner, *raw) if p) + "}").encode("utf-8")


def check_error_body(body: object) -> str:
    """``body`` has grounded's error shape (``ErrorBody``); returns its ``detail``."""
    assert isinstance(body, dict), body
    detail = body.get("detail")
    assert isinstance(detail, str) and detail.strip(), body
    errors = body.get("errors")
    if errors is not None:
        assert isinstance(errors, list), body
        for err in errors:
            assert isinstance(err, dict) and {"loc", "msg", "type"} <= set(err), err
            assert isinstance(err["loc"], list) and all(
                isinstance(p, str | int) for p in err["loc"]
            ), err
            assert isinstance(err["msg"], str) and isinstance(err["type"], str), err
    request_id = body.get("request_id")
    assert request_id is None or (isinstance(request_id, str) and request_id), body
    return detail
