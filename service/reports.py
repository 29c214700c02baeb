"""The eval reports under ``reports_dir``: found by a bounded walk, served by id, never by path.

``grounded eval ladder`` (and ``grounded eval nightly``) write self-contained HTML reports; the
API lists them so the playground can show them next to the documents they measure. A report's
id is a hash of its path relative to the folder, and a request's id is only ever matched against
the listing: no part of a request becomes a path, so ``/v1/reports/../../etc/passwd`` has
nothing to climb with.

The walk is bounded because the folder is the operator's, not ours, and may hold anything:
hidden entries and symbolic links are skipped (a link could lead out of the folder), at most
:data:`MAX_DEPTH` folders deep, :data:`MAX_ENTRIES` entries looked at, files of at most
:data:`MAX_REPORT_BYTES`, and the :data:`MAX_REPORTS` newest of them listed. A title is read
from the first :data:`TITLE_PROBE_BYTES` of a file. A folder that does not exist holds no
reports; that is not an error.

Example::

    for report in list_reports(Path("eval-results")):
        print(report.id, report.title, report.path)
    html = read_report(Path("eval-results"), "3f2a9c0d1e4b5a6f")
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

MAX_DEPTH = 4
"""Folders below ``reports_dir`` the walk enters (``ladder-x/report.html`` is one deep)."""
MAX_ENTRIES = 20_000
"""Directory entries looked at per walk, whatever they are: the walk's cost is bounded."""
MAX_REPORTS = 500
"""Reports listed, the newest."""
MAX_REPORT_BYTES = 32 * 1024 * 1024
"""Larger files are not reports grounded wrote (a ladder report is about 100 KiB)."""
TITLE_PROBE_BYTES = 4096
MAX_TITLE_CHARS = 200
ID_LENGTH = 16

_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
# A report swapped for a link after the walk is refused rather than followed, and one swapped for
# a FIFO is refused rather than waited on (non-blocking open, then fstat).
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


class ReportNotFound(LookupError):
    """No report has this id (404)."""

    def __init__(self, report_id: str) -> None:
        super().__init__(f"no report {report_id!r}; GET /v1/reports lists them")


@dataclass(frozen=True)
class Report:
    """One HTML report; ``path`` is relative to the reports folder, with ``/`` separators."""

    id: str
    title: str
    path: str
    modified: str
    bytes: int


@dataclass(frozen=True)
class _Found:
    relative: str
    file: Path
    mtime: float
    size: int

    @property
    def id(self) -> str:
        return report_id(self.relative)


def report_id(relative: str) -> str:
    """The id of the report at ``relative`` (a posix path under the reports folder)."""
    return hashlib.sha256(relative.encode("utf-8", "surrogateescape")).hexdigest()[:ID_LENGTH]


def _walk(root: Path) -> list[_Found]:
    """HTML files under ``root`` within the bounds, newest first (the :data:`MAX_REPORTS`)."""
    found: list[_Found] = []
    seen = 0
    stack: list[tuple[Path, tuple[str, ...]]] = [(root, ())]
    while stack and seen < MAX_ENTRIES:
        folder, parts = stack.pop()
        try:
            with os.scandir(folder) as scan:
                entries = sorted(islice(scan, MAX_ENTRIES - seen), key=lambda e: e.name)
        except OSError:  # unreadable or vanished: it holds no reports we can serve
            continue
        for entry in entries:
            seen += 1
            if entry.name.startswith(".") or entry.is_symlink():
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if len(parts) < MAX_DEPTH:
                        stack.append((Path(entry.path), (*parts, entry.name)))
                    continue
                if not entry.name.lower().endswith(".html"):
                    continue
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode) and info.st_size <= MAX_REPORT_BYTES:
                relative = "/".join((*parts, entry.name))
                found.append(_Found(relative, Path(entry.path), info.st_mtime, info.st_size))
    found.sort(key=lambda f: (-f.mtime, f.relative))
    return found[:MAX_REPORTS]


def _reports_in(root: Path | None) -> list[_Found]:
    if root is None or not root.is_dir():
        return []
    return _walk(root)


def _title(found: _Found) -> str:
    """The ``<title>`` within the first :data:`TITLE_PROBE_BYTES`, else the file's path."""
    try:
        with found.file.open("rb") as fh:
            head = fh.read(TITLE_PROBE_BYTES).decode("utf-8", "replace")
    except OSError:
        return found.relative
    match = _TITLE.search(head)
    title = " ".join(html.unescape(match.group(1)).split()) if match else ""
    return title[:MAX_TITLE_CHARS] or found.relative


def _iso(ts: float) -> str:
    """UTC with milliseconds and ``Z``, like the timestamps of jobs."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def list_reports(root: Path | None) -> list[Report]:
    """The reports under ``root``, newest first; ``[]`` when ``root`` is unset or missing."""
    return [Report(f.id, _title(f), f.relative, _iso(f.mtime), f.size) for f in _reports_in(root)]


def read_report(root: Path | None, wanted: str) -> bytes:
    """The bytes of the listed report whose id is ``wanted``; :class:`ReportNotFound` else."""
    found = next((f for f in _reports_in(root) if f.id == wanted), None)
    if found is None:
        raise ReportNotFound(wanted)
    try:
        fd = os.open(found.file, _OPEN_FLAGS)
    except OSError:  # gone, or swapped for a link since the walk
        raise ReportNotFound(wanted) from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise ReportNotFound(wanted)
        data = fh.read(MAX_REPORT_BYTES + 1)
    if len(data) > MAX_REPORT_BYTES:  # it grew past the limit since the walk
        raise ReportNotFound(wanted)
    return data
