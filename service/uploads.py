"""Uploaded files → documents, with the loaders ``grounded ingest`` uses, each file failing alone.

``POST /v1/files`` hands over what a browser sends: a client's file name and a stream of bytes.
Neither is trusted. The name never reaches the filesystem: each upload is copied, at most
``max_file_bytes`` of it, into a private temporary folder under a generated name that keeps only
the suffix, and only a suffix the loaders support (:data:`~ingest.loaders.SUPPORTED_SUFFIXES`).
The loaders then read that copy exactly as they read a file on the command line
(:func:`~ingest.loaders.load_file` with the configured :class:`~ingest.loaders.LoadLimits`), so
an upload and ``grounded ingest`` accept the same files for the same reasons. The document id
and ``source`` are the base name of the client's name (directories dropped, ``/`` and ``\\``
alike); a JSON Lines file keeps its records' ids, as on the command line.

Every problem is one file's: a bad name, an unsupported type, an oversize or corrupt file, a
document id another file of the request already has, or documents beyond the request's share are
reported against that file, and the other files still make the job. Copies are deleted as soon as
they are loaded, and the folder with whatever is left when anything goes wrong, so at most one
upload is on disk at a time.

Example::

    batch = load_uploads([Upload("notes.md", stream)], LoadLimits.from_settings(settings), 256)
    batch.documents            # [Document("notes.md", ...)]
    batch.files                # [FileOutcome("notes.md", documents=1, error=None)]
"""

from __future__ import annotations

import logging
import tempfile
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ingest.documents import Document
from ingest.loaders import SUPPORTED_SUFFIXES, LoadFailure, LoadLimits, SourceFile, load_file

log = logging.getLogger("grounded.api")

MAX_NAME_CHARS = 255
"""Longest file name accepted: what common filesystems allow, and the document id it becomes."""
COPY_CHUNK_BYTES = 64 * 1024
MAX_REASONS_PER_FILE = 5
"""Problems listed for one file (a JSON Lines file can have one per line); the rest are counted."""

# Bidirectional overrides and isolates make a name display as another ("evil\u202egpj.md"); they
# are format characters, not controls, so they are named here.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class FileRefused(Exception):
    """One upload cannot become documents; the message says why, for the client."""


@dataclass(frozen=True)
class Upload:
    """What a client sent for one file: its name as the client gave it, and the bytes."""

    filename: str | None
    stream: BinaryIO


@dataclass(frozen=True)
class FileOutcome:
    """How one upload went: the name it is reported under, its documents, or why it failed.

    A JSON Lines file can have both documents and an ``error`` (the lines that failed)."""

    name: str
    documents: int
    error: str | None = None


@dataclass(frozen=True)
class UploadBatch:
    """The documents of every upload that loaded, and one outcome per upload, in order."""

    documents: list[Document]
    files: list[FileOutcome]

    def reasons(self) -> str:
        """One line per failed file: ``<name>: <why>``."""
        return "\n".join(f"{f.name}: {f.error}" for f in self.files if f.error)


def upload_name(raw: str | None) -> str:
    """The base name of a client's file name, or :class:`FileRefused`.

    Browsers send base names, but nothing stops a client from sending ``../../etc/passwd.md``
    or ``a\\..\\b.md``: everything up to the last ``/`` or ``\\`` is dropped (``passwd.md``,
    ``b.md``), never resolved. The name is only ever a document id and a display string.
    """
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    if not name:
        raise FileRefused("the file has no name")
    if name in (".", ".."):
        raise FileRefused(f"{name!r} is not a file name")
    if len(name) > MAX_NAME_CHARS:
        raise FileRefused(f"the file name is {len(name)} characters; the limit is {MAX_NAME_CHARS}")
    for char in name:
        if unicodedata.category(char) in ("Cc", "Cs") or char in _BIDI_CONTROLS:
            raise FileRefused(f"the file name contains the control character U+{ord(char):04X}")
    return name


def shown_name(raw: str | None) -> str:
    """A refused name as it can be reported back: cut to :data:`MAX_NAME_CHARS`, controls and
    lone surrogates (which JSON in UTF-8 cannot carry) replaced with U+FFFD."""
    text = raw or ""
    cut = text[:MAX_NAME_CHARS] + ("…" if len(text) > MAX_NAME_CHARS else "")
    return "".join(
        "\ufffd" if unicodedata.category(c) in ("Cc", "Cs") or c in _BIDI_CONTROLS else c
        for c in cut
    )


def _suffix(name: str) -> str:
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise FileRefused(
            f"unsupported file type '{suffix or name}' (supported: {', '.join(SUPPORTED_SUFFIXES)})"
        )
    return suffix


def _copy_bounded(stream: BinaryIO, target: Path, limit: int) -> None:
    """Copy ``stream`` to a new file ``target``, stopping at the first byte over ``limit``."""
    written = 0
    with target.open("xb") as out:  # "x": a generated name, never an existing file
        while chunk := stream.read(COPY_CHUNK_BYTES):
            written += len(chunk)
            if written > limit:
                raise FileRefused(
                    f"the file is over the limit of {limit} bytes (GROUNDED_MAX_FILE_BYTES)"
                )
            out.write(chunk)


def _reason(failures: Sequence[LoadFailure]) -> str:
    """The loader's reasons, without the temporary path it names its failures by."""
    lines = [f"line {f.line}: {f.reason}" if f.line is not None else f.reason for f in failures]
    shown = "; ".join(lines[:MAX_REASONS_PER_FILE])
    more = len(lines) - MAX_REASONS_PER_FILE
    return f"{shown}; and {more} more" if more > 0 else shown


def _load_one(
    upload: Upload, name: str, folder: Path, index: int, limits: LoadLimits
) -> tuple[list[Document], list[LoadFailure]]:
    """Copy one upload under a generated name, load it, delete the copy."""
    path = folder / f"{index}{_suffix(name)}"
    try:
        _copy_bounded(upload.stream, path, limits.max_file_bytes)
        documents: list[Document] = []
        failures: list[LoadFailure] = []
        for item in load_file(SourceFile(path, doc_id=name, name=name), limits):
            if isinstance(item, Document):
                documents.append(item)
            else:
                failures.append(item)
        return documents, failures
    finally:
        path.unlink(missing_ok=True)


def load_uploads(uploads: Sequence[Upload], limits: LoadLimits, max_documents: int) -> UploadBatch:
    """Documents of every upload that loads, and one :class:`FileOutcome` per upload.

    Args:
        limits: the configured loader limits; ``source_paths`` is always ``"relative"`` here,
            since an absolute source would be the temporary copy's path.
        max_documents: documents the whole request may hold (a JSON Lines file can hold many);
            a file whose documents would go past it fails alone.
    """
    limits = replace(limits, source_paths="relative")
    documents: list[Document] = []
    ids: set[str] = set()
    outcomes: list[FileOutcome] = []
    with tempfile.TemporaryDirectory(prefix="grounded-upload-") as tmp:
        for index, upload in enumerate(uploads):
            reported = shown_name(upload.filename)
            try:
                name = reported = upload_name(upload.filename)
                loaded, failures = _load_one(upload, name, Path(tmp), index, limits)
                clash = next((d.id for d in loaded if d.id in ids), None)
                if clash is not None:
                    raise FileRefused(
                        f"document id {clash!r} is also in another file of this request"
                    )
                if len(documents) + len(loaded) > max_documents:
                    raise FileRefused(
                        f"its {len(loaded)} document(s) would make the request hold more than "
                        f"{max_documents} (GROUNDED_MAX_DOCUMENTS_PER_REQUEST)"
                    )
            except FileRefused as exc:
                outcomes.append(FileOutcome(reported, 0, str(exc)))
                continue
            except Exception:  # a loader bug on a hostile file must not fail the other files
                log.exception("upload %d could not be loaded", index)
                outcomes.append(FileOutcome(reported, 0, "the file could not be loaded"))
                continue
            documents.extend(loaded)
            ids.update(d.id for d in loaded)
            error = _reason(failures) if failures else None
            if not loaded and error is None:
                error = "no documents in the file"
            outcomes.append(FileOutcome(reported, len(loaded), error))
    return UploadBatch(documents, outcomes)
