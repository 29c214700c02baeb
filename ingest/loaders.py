"""File loaders: paths in, :class:`Document` s or a reasoned failure out.

Every file either yields documents or one :class:`LoadFailure` naming the path and the reason, so a
corrupt file never stops a batch; in a JSON Lines file every line fails alone, named by its number.
Parsing uses well-kept libraries: pypdf for PDF, BeautifulSoup for HTML, the standard json module
for JSON Lines.

Memory is bounded by :class:`LoadLimits`: a file over ``max_file_bytes`` is refused by its size
before it is opened, a JSON Lines file is streamed one bounded line at a time, HTML markup is
capped at 4 x ``max_document_bytes`` before it is parsed, and a document whose text is over
``max_document_bytes`` is refused rather than handed to the chunker and the embedder.

Example::

    for item in iter_documents([Path("docs")], LoadLimits.from_settings(settings)):
        print(item)
"""

from __future__ import annotations

import json
import logging
import math
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from .documents import Document, check_metadata

if TYPE_CHECKING:
    from .settings import Settings

logging.getLogger("pypdf").setLevel(logging.ERROR)

SUPPORTED_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".jsonl")

SourcePaths = Literal["relative", "absolute"]

_BOM = b"\xef\xbb\xbf"
# Room on a JSON Lines record for its id, title and keys, beyond its text and metadata.
_RECORD_OVERHEAD_BYTES = 64 * 1024
# JSON may spell one UTF-8 byte as six ("\u0001"); a line cap below that could refuse a line
# whose document would be accepted, with a less useful message than the document-size one.
_JSON_ESCAPE_FACTOR = 6
# Pieces in which the rest of an over-long line is skipped.
_SKIP_BYTES = 1024 * 1024
# BeautifulSoup takes about 60 bytes of memory per byte of tag-dense markup (measured: 16 MiB of
# HTML, +973 MiB RSS), so a 64 MiB page would cost ~4 GB. Markup is capped at this many times the
# document limit: a page whose text could reach the limit at a 25% text ratio still loads.
_HTML_MARKUP_FACTOR = 4


def _setting(name: str) -> Any:
    """The default of a setting: one place holds each limit's default."""
    from .settings import Settings

    return Settings.model_fields[name].default


@dataclass(frozen=True)
class LoadLimits:
    """What the loaders accept, so no file can make ingest hold gigabytes.

    The defaults are those of :class:`~ingest.settings.Settings`; the CLI passes
    ``LoadLimits.from_settings(settings)`` so ``GROUNDED_MAX_FILE_BYTES`` and friends apply.

    Attributes:
        max_file_bytes: files larger than this are refused by their size without being read.
            JSON Lines files are exempt: they are streamed line by line, and each line is capped
            by :attr:`max_line_bytes` instead, so corpora of any size load in bounded memory.
        max_document_bytes: UTF-8 bytes of one document's text (every format); HTML files are
            also refused above 4 x this many bytes of markup, which BeautifulSoup would need
            about 60 times in memory.
        max_metadata_depth: nesting levels of a JSON Lines record's ``metadata``.
        max_metadata_bytes: JSON bytes of a JSON Lines record's ``metadata``.
        source_paths: ``"relative"`` gives documents a ``source`` relative to the ingest root's
            parent (the same string as a file's ``doc_id``), so no server path is exposed;
            ``"absolute"`` gives the resolved absolute path.
    """

    max_file_bytes: int = _setting("max_file_bytes")
    max_document_bytes: int = _setting("max_document_bytes")
    max_metadata_depth: int = _setting("max_metadata_depth")
    max_metadata_bytes: int = _setting("max_metadata_bytes")
    source_paths: SourcePaths = _setting("source_paths")  # noqa: RUF009 (an immutable str)

    def __post_init__(self) -> None:
        for name in (
            "max_file_bytes",
            "max_document_bytes",
            "max_metadata_depth",
            "max_metadata_bytes",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.source_paths not in ("relative", "absolute"):
            raise ValueError("source_paths must be 'relative' or 'absolute'")

    @classmethod
    def from_settings(cls, settings: Settings) -> LoadLimits:
        """The limits configured in ``settings`` (environment, config file or flags)."""
        return cls(
            max_file_bytes=settings.max_file_bytes,
            max_document_bytes=settings.max_document_bytes,
            max_metadata_depth=settings.max_metadata_depth,
            max_metadata_bytes=settings.max_metadata_bytes,
            source_paths=settings.source_paths,
        )

    @property
    def max_line_bytes(self) -> int:
        """Longest JSON Lines record read into memory; longer lines are skipped unread.

        The largest text and metadata the other limits accept, at JSON's worst-case escaping,
        plus room for the id and title: a line is never refused as too long when the document
        it carries would be accepted, and memory per line stays a small multiple of the limits.
        """
        payload = self.max_document_bytes + self.max_metadata_bytes
        return _JSON_ESCAPE_FACTOR * payload + _RECORD_OVERHEAD_BYTES


DEFAULT_LIMITS = LoadLimits()


class LoadError(Exception):
    """A file (or a line of it) that cannot become a document."""


@dataclass(frozen=True)
class LoadFailure:
    """A file, or one line of a JSON Lines file, that could not be loaded, and why."""

    source: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class SourceFile:
    """A file found under an ingest root; ``doc_id`` is its path relative to the root's parent.

    ``name`` is the file's name as its owner knows it when ``path`` is only a stand-in: an upload
    is stored under a generated name (the client's never reaches the filesystem), and a title
    taken from that name would be noise.
    """

    path: Path
    doc_id: str
    name: str | None = None

    @property
    def stem(self) -> str:
        """The file name without its suffix: the title of a document whose file names none."""
        return PurePath(self.name).stem if self.name else self.path.stem

    def stored_source(self, mode: SourcePaths) -> str:
        """The ``source`` of its documents: ``doc_id`` (relative) or the absolute path."""
        return self.doc_id if mode == "relative" else str(self.path)


def root_name(root: Path) -> str:
    """The name an ingest root gives its files' ids and relative sources (``<name>/<rel>``)."""
    root = Path(root)
    return root.resolve().name if root.is_dir() else root.name


def discover(paths: Iterable[Path]) -> Iterator[SourceFile]:
    """Files named directly, and files found recursively in folders (hidden entries skipped)."""
    for raw in paths:
        root = Path(raw)
        if root.is_dir():
            name = root_name(root)
            for path in sorted(root.rglob("*")):
                rel = path.relative_to(root)
                if any(part.startswith(".") for part in rel.parts) or not path.is_file():
                    continue
                yield SourceFile(path.resolve(), (Path(name) / rel).as_posix())
        else:
            yield SourceFile(root.resolve() if root.exists() else root, root_name(root))


def iter_documents(
    paths: Iterable[Path], limits: LoadLimits = DEFAULT_LIMITS
) -> Iterator[Document | LoadFailure]:
    """Documents of every file under ``paths``, and a :class:`LoadFailure` for each bad one."""
    for source in discover(paths):
        yield from load_file(source, limits)


def load_file(
    source: SourceFile, limits: LoadLimits = DEFAULT_LIMITS
) -> Iterator[Document | LoadFailure]:
    """Documents of one file; anything wrong with it becomes a :class:`LoadFailure`, not a raise.

    Failures name the path as found on this machine: they are local CLI output, unlike the
    documents' ``source``, which is stored and served.
    """
    path = source.path
    where = str(path)
    suffix = path.suffix.lower()
    try:
        size = _regular_file_size(path, suffix)
        if suffix in _STREAM_LOADERS:
            with path.open("rb") as stream:
                yield from _STREAM_LOADERS[suffix](source, stream, limits)
            return
        if size > limits.max_file_bytes:
            raise LoadError(_file_too_big(size, limits.max_file_bytes))
        data = _read_at_most(path, limits.max_file_bytes)
        if not data.strip():
            raise LoadError("empty file")
        for item in _LOADERS[suffix](source, data, limits):
            yield _check_document(item, where, limits)
    except LoadError as exc:
        yield LoadFailure(where, str(exc))
    except OSError as exc:
        yield LoadFailure(where, f"cannot read: {exc.strerror or exc}")


def _regular_file_size(path: Path, suffix: str) -> int:
    """Size of a supported regular file; devices and pipes could be read forever."""
    if not path.exists():
        raise LoadError("no such file or directory")
    if suffix not in _LOADERS and suffix not in _STREAM_LOADERS:
        raise LoadError(
            f"unsupported file type '{suffix or path.name}' "
            f"(supported: {', '.join(SUPPORTED_SUFFIXES)})"
        )
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise LoadError("not a regular file")
    return info.st_size


def _file_too_big(size: int, limit: int) -> str:
    return (
        f"file is {size} bytes, over the limit of {limit} bytes "
        "(GROUNDED_MAX_FILE_BYTES); split it or raise the limit"
    )


def _read_at_most(path: Path, limit: int) -> bytes:
    """The file's bytes, refusing it if it grew past ``limit`` since it was measured."""
    with path.open("rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise LoadError(
            f"file grew past the limit of {limit} bytes while being read (GROUNDED_MAX_FILE_BYTES)"
        )
    return data


def _text_too_big(size: int, limit: int) -> str:
    return (
        f"document text is {size} bytes of UTF-8, over the limit of {limit} bytes "
        "(GROUNDED_MAX_DOCUMENT_BYTES); split it or raise the limit"
    )


def _utf8_size(text: str, what: str) -> int:
    """UTF-8 length of ``text``; unpaired surrogates (from JSON escapes) cannot be stored."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise LoadError(
            f"{what} has an unpaired surrogate (\\u{ord(text[exc.start]):04x}), not valid Unicode"
        ) from None


def _check_document(
    item: Document | LoadFailure, where: str, limits: LoadLimits
) -> Document | LoadFailure:
    """The item, or a failure when a document's text is over ``max_document_bytes``."""
    if isinstance(item, Document):
        size = _utf8_size(item.text, "text")
        if size > limits.max_document_bytes:
            return LoadFailure(where, _text_too_big(size, limits.max_document_bytes))
    return item


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM); anything else is reported rather than garbled."""
    if b"\x00" in data[:8192]:
        raise LoadError("binary content (NUL bytes), not a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LoadError(
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "convert the file to UTF-8"
        ) from None


def _decode_document(data: bytes, limits: LoadLimits) -> str:
    """A plain-text file's text, refused by its byte count before a large file is decoded."""
    size = len(data) - (len(_BOM) if data.startswith(_BOM) else 0)
    if size > limits.max_document_bytes:
        raise LoadError(_text_too_big(size, limits.max_document_bytes))
    return decode_text(data)


def _require_text(text: str) -> str:
    if not text.strip():
        raise LoadError("no text content")
    return text


def _load_txt(source: SourceFile, data: bytes, limits: LoadLimits) -> Iterator[Document]:
    text = _require_text(_decode_document(data, limits))
    yield Document(
        source.doc_id,
        text,
        title=source.stem,
        source=source.stored_source(limits.source_paths),
    )


_MD_TITLE = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _load_markdown(source: SourceFile, data: bytes, limits: LoadLimits) -> Iterator[Document]:
    text = _require_text(_decode_document(data, limits))
    match = _MD_TITLE.search(text)
    title = match.group(1) if match else source.stem
    yield Document(
        source.doc_id, text, title=title, source=source.stored_source(limits.source_paths)
    )


_HEADING_TAGS = ("h1", "h2", "h3", "h4", "h5", "h6")


def html_to_text(markup: str) -> tuple[str, str]:
    """Visible text of an HTML page with headings kept as markdown ``#`` lines, and its title."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "svg"]):
        tag.decompose()
    title_tag = soup.find("title")
    title = title_tag.get_text(" ", strip=True) if title_tag else ""
    if soup.head:
        soup.head.decompose()
    for tag in soup.find_all(_HEADING_TAGS):
        level = int(tag.name[1])
        tag.replace_with(f"\n\n{'#' * level} {tag.get_text(' ', strip=True)}\n\n")
    lines = [
        re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in soup.get_text("\n").splitlines()
    ]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    if not title:
        match = _MD_TITLE.search(text)
        title = match.group(1) if match else ""
    return text, title


def _load_html(source: SourceFile, data: bytes, limits: LoadLimits) -> Iterator[Document]:
    cap = _HTML_MARKUP_FACTOR * limits.max_document_bytes
    if len(data) > cap:
        raise LoadError(
            f"HTML file is {len(data)} bytes, over the limit of {cap} bytes of markup "
            f"({_HTML_MARKUP_FACTOR} x GROUNDED_MAX_DOCUMENT_BYTES: parsing costs about 60 bytes "
            "of memory per byte); split it or raise the limit"
        )
    text, title = html_to_text(decode_text(data))
    yield Document(
        source.doc_id,
        _require_text(text),
        title=title or source.stem,
        source=source.stored_source(limits.source_paths),
    )


def _load_pdf(source: SourceFile, data: bytes, limits: LoadLimits) -> Iterator[Document]:
    import io

    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    if not data.lstrip().startswith(b"%PDF"):
        raise LoadError("not a PDF (missing %PDF header)")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise LoadError("encrypted PDF")
        pages = _pdf_pages(reader, limits.max_document_bytes)
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except LoadError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise LoadError(f"corrupt PDF: {exc}") from None
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise LoadError("PDF has no extractable text (scanned images need OCR first)")
    yield Document(
        source.doc_id,
        text,
        title=str(meta_title).strip() or source.stem,
        source=source.stored_source(limits.source_paths),
        metadata={"pages": len(pages)},
    )


def _pdf_pages(reader: Any, max_text_bytes: int) -> list[str]:
    """Each page's text; extraction stops as soon as the text is over the document limit."""
    pages: list[str] = []
    total = 0
    for page in reader.pages:
        text = page.extract_text() or ""
        total += len(text.encode("utf-8", "replace"))
        if total > max_text_bytes:
            raise LoadError(
                f"document text reaches {total} bytes of UTF-8 by page {len(pages) + 1} of "
                f"{len(reader.pages)}, over the limit of {max_text_bytes} bytes "
                "(GROUNDED_MAX_DOCUMENT_BYTES); split it or raise the limit"
            )
        pages.append(text)
    return pages


# JSON Lines -------------------------------------------------------------------------------------
class _NotFinite(ValueError):
    """NaN, Infinity or an overflowing float in a JSON line: not JSON, and not storable."""


def _refuse_constant(name: str) -> Any:
    raise _NotFinite(f"{name} is not valid JSON (numbers must be finite)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(f"the number {text[:40]} overflows to infinity")
    return value


def _iter_lines(stream: BinaryIO, max_line: int) -> Iterator[tuple[int, bytes | None]]:
    """``(line number, bytes)`` per line, reading at most ``max_line + 1`` bytes at a time.

    A line longer than ``max_line`` comes as ``(number, None)``; its rest is skipped in bounded
    pieces, so one endless line costs no more memory than a good one.
    """
    number = 0
    while line := stream.readline(max_line + 1):
        number += 1
        if len(line) <= max_line or line.endswith(b"\n"):
            yield number, line
            continue
        while (rest := stream.readline(_SKIP_BYTES)) and not rest.endswith(b"\n"):
            pass
        yield number, None


def _load_jsonl(
    source: SourceFile, stream: BinaryIO, limits: LoadLimits
) -> Iterator[Document | LoadFailure]:
    """One document per line: ``_id``/``id``, ``title``, ``text``, optional ``metadata`` (BEIR).

    The file is read one line at a time, so its size is not capped; every bad line is one
    :class:`LoadFailure` with its line number and the good lines around it still load.
    """
    where = str(source.path)
    seen: set[str] = set()
    any_content = False
    for number, line in _iter_lines(stream, limits.max_line_bytes):
        if line is not None and not line.strip():
            continue
        any_content = True
        try:
            document = _jsonl_document(source, line, number, limits)
        except LoadError as exc:
            yield LoadFailure(where, str(exc), number)
            continue
        if document.id in seen:
            yield LoadFailure(where, f"duplicate id {document.id!r} in this file", number)
            continue
        seen.add(document.id)
        yield document
    if not any_content:
        yield LoadFailure(where, "empty file")


def _jsonl_document(
    source: SourceFile, line: bytes | None, number: int, limits: LoadLimits
) -> Document:
    """The document of one JSON Lines record, or ``LoadError`` saying what is wrong with it."""
    if line is None:
        raise LoadError(
            f"line is longer than {limits.max_line_bytes} bytes, the most one record may take "
            "(6 x (GROUNDED_MAX_DOCUMENT_BYTES + GROUNDED_MAX_METADATA_BYTES) + 64 KiB)"
        )
    record = _parse_record(line, first=number == 1)
    doc_id = record.get("_id", record.get("id"))
    body = record.get("text")
    metadata = record.get("metadata") or {}
    if doc_id is None or str(doc_id) == "":
        raise LoadError("missing '_id' or 'id'")
    if not isinstance(doc_id, str | int) or isinstance(doc_id, bool):
        raise LoadError(f"'_id' must be a string or an integer, not {type(doc_id).__name__}")
    if not isinstance(body, str) or not body.strip():
        raise LoadError(f"document {doc_id!r} has no 'text'")
    size = _utf8_size(body, "'text'")
    if size > limits.max_document_bytes:
        raise LoadError(_text_too_big(size, limits.max_document_bytes))
    if not isinstance(metadata, dict):
        raise LoadError("'metadata' must be an object")
    try:
        check_metadata(
            metadata, max_depth=limits.max_metadata_depth, max_bytes=limits.max_metadata_bytes
        )
    except ValueError as exc:
        raise LoadError(f"invalid metadata: {exc}") from None
    title = str(record.get("title") or "")
    _utf8_size(str(doc_id), "'_id'")
    _utf8_size(title, "'title'")
    return Document(
        str(doc_id),
        body,
        title=title,
        source=source.stored_source(limits.source_paths),
        metadata=metadata,
    )


def _parse_record(line: bytes, *, first: bool) -> dict[str, Any]:
    """One line as a JSON object; NaN and Infinity are refused, as JSON itself does."""
    if first and line.startswith(_BOM):
        line = line[len(_BOM) :]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LoadError(
            f"not valid UTF-8 (byte 0x{line[exc.start]:02x} at column {exc.start + 1}); "
            "convert the file to UTF-8"
        ) from None
    try:
        record = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise LoadError(f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    except _NotFinite as exc:
        raise LoadError(str(exc)) from None
    except RecursionError:
        raise LoadError("invalid JSON: nested too deeply to parse") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise LoadError(f"invalid JSON: {exc}") from None
    if not isinstance(record, dict):
        raise LoadError("each line must be a JSON object")
    return record


Loader = Callable[[SourceFile, bytes, LoadLimits], Iterator[Document | LoadFailure]]
StreamLoader = Callable[[SourceFile, BinaryIO, LoadLimits], Iterator[Document | LoadFailure]]

_LOADERS: dict[str, Loader] = {
    ".txt": _load_txt,
    ".md": _load_markdown,
    ".markdown": _load_markdown,
    ".html": _load_html,
    ".htm": _load_html,
    ".pdf": _load_pdf,
}
# Streamed from the open file: exempt from max_file_bytes, bounded per line instead.
_STREAM_LOADERS: dict[str, StreamLoader] = {".jsonl": _load_jsonl}


# Pruning ----------------------------------------------------------------------------------------
def stale_documents(
    sources: dict[str, str], roots: Sequence[Path], seen: set[str], failed_sources: set[str]
) -> list[str]:
    """Documents that came from under ``roots`` but were not seen in this run.

    ``sources`` maps stored document ids to their ``source``. A relative source
    (``source_paths="relative"``) is under a root when it is the root's name or starts with
    ``<root name>/``; an absolute one (older collections, ``source_paths="absolute"``) when the
    path lies under the resolved root. Documents of a file that failed to load (wholly or in
    part) are kept: a broken file is not a deleted one. ``failed_sources`` may name files by
    their absolute path (as :class:`LoadFailure` does), as typed, or by their relative source.

    Relative sources carry only the root's name, so two roots of the same name (already sharing
    document ids) also share their documents here.
    """
    resolved = [(Path(r).resolve(), root_name(Path(r))) for r in roots]
    failed = _failed_keys(failed_sources, resolved)

    def under_roots(source: str) -> bool:
        path = Path(source)
        if path.is_absolute():
            return any(path == root or root in path.parents for root, _ in resolved)
        return any(source == name or source.startswith(f"{name}/") for _, name in resolved)

    return sorted(
        doc_id
        for doc_id, source in sources.items()
        if doc_id not in seen and source not in failed and under_roots(source)
    )


def _failed_keys(failed_sources: Iterable[str], roots: Sequence[tuple[Path, str]]) -> set[str]:
    """Every spelling of each failed file a stored ``source`` may use: absolute and relative."""
    keys: set[str] = set()
    for failed in failed_sources:
        path = Path(failed).resolve()
        keys.update((failed, str(path)))
        for root, name in roots:
            if path == root:
                keys.add(name)
            elif root in path.parents:
                keys.add((Path(name) / path.relative_to(root)).as_posix())
    return keys
