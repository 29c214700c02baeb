"""File loaders: paths in, :class:`Document` s or a reasoned failure out.

Every file either yields documents or one :class:`LoadFailure` naming the path and the reason, so a
corrupt file never stops a batch. Parsing uses well-kept libraries: pypdf for PDF, BeautifulSoup
for HTML, the standard json module for JSON Lines.

Example::

    for item in iter_documents([Path("docs")]):
        print(item)
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .documents import Document

logging.getLogger("pypdf").setLevel(logging.ERROR)

SUPPORTED_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".jsonl")


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
    """A file found under an ingest root; ``doc_id`` is its path relative to the root's parent."""

    path: Path
    doc_id: str


def discover(paths: Iterable[Path]) -> Iterator[SourceFile]:
    """Files named directly, and files found recursively in folders (hidden entries skipped)."""
    for raw in paths:
        root = Path(raw)
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                rel = path.relative_to(root)
                if any(part.startswith(".") for part in rel.parts) or not path.is_file():
                    continue
                yield SourceFile(path.resolve(), (Path(root.resolve().name) / rel).as_posix())
        else:
            yield SourceFile(root.resolve() if root.exists() else root, root.name)


def iter_documents(paths: Iterable[Path]) -> Iterator[Document | LoadFailure]:
    for source in discover(paths):
        yield from load_file(source)


def load_file(source: SourceFile) -> Iterator[Document | LoadFailure]:
    path = source.path
    where = str(path)
    suffix = path.suffix.lower()
    loader = _LOADERS.get(suffix)
    try:
        if not path.exists():
            raise LoadError("no such file or directory")
        if loader is None:
            raise LoadError(
                f"unsupported file type '{suffix or path.name}' "
                f"(supported: {', '.join(SUPPORTED_SUFFIXES)})"
            )
        data = path.read_bytes()
        if not data.strip():
            raise LoadError("empty file")
        yield from loader(source, data)
    except LoadError as exc:
        yield LoadFailure(where, str(exc))
    except OSError as exc:
        yield LoadFailure(where, f"cannot read: {exc.strerror or exc}")


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


def _require_text(text: str) -> str:
    if not text.strip():
        raise LoadError("no text content")
    return text


def _load_txt(source: SourceFile, data: bytes) -> Iterator[Document]:
    text = _require_text(decode_text(data))
    yield Document(source.doc_id, text, title=source.path.stem, source=str(source.path))


_MD_TITLE = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _load_markdown(source: SourceFile, data: bytes) -> Iterator[Document]:
    text = _require_text(decode_text(data))
    match = _MD_TITLE.search(text)
    title = match.group(1) if match else source.path.stem
    yield Document(source.doc_id, text, title=title, source=str(source.path))


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


def _load_html(source: SourceFile, data: bytes) -> Iterator[Document]:
    text, title = html_to_text(decode_text(data))
    yield Document(
        source.doc_id, _require_text(text), title=title or source.path.stem, source=str(source.path)
    )


def _load_pdf(source: SourceFile, data: bytes) -> Iterator[Document]:
    import io

    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    if not data.lstrip().startswith(b"%PDF"):
        raise LoadError("not a PDF (missing %PDF header)")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise LoadError("encrypted PDF")
        pages = [page.extract_text() or "" for page in reader.pages]
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
        title=str(meta_title).strip() or source.path.stem,
        source=str(source.path),
        metadata={"pages": len(pages)},
    )


def _load_jsonl(source: SourceFile, data: bytes) -> Iterator[Document | LoadFailure]:
    """One document per line: ``_id``/``id``, ``title``, ``text``, optional ``metadata`` (BEIR)."""
    text = decode_text(data)
    seen: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = str(source.path)
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield LoadFailure(where, f"invalid JSON: {exc.msg}", lineno)
            continue
        if not isinstance(record, dict):
            yield LoadFailure(where, "each line must be a JSON object", lineno)
            continue
        doc_id = record.get("_id", record.get("id"))
        body = record.get("text")
        metadata = record.get("metadata") or {}
        if doc_id is None or str(doc_id) == "":
            yield LoadFailure(where, "missing '_id' or 'id'", lineno)
        elif not isinstance(body, str) or not body.strip():
            yield LoadFailure(where, f"document {doc_id!r} has no 'text'", lineno)
        elif not isinstance(metadata, dict):
            yield LoadFailure(where, "'metadata' must be an object", lineno)
        elif str(doc_id) in seen:
            yield LoadFailure(where, f"duplicate id {doc_id!r} in this file", lineno)
        else:
            seen.add(str(doc_id))
            yield Document(
                str(doc_id),
                body,
                title=str(record.get("title") or ""),
                source=str(source.path),
                metadata=metadata,
            )


_LOADERS: dict[str, Callable[[SourceFile, bytes], Iterator[Document | LoadFailure]]] = {
    ".txt": _load_txt,
    ".md": _load_markdown,
    ".markdown": _load_markdown,
    ".html": _load_html,
    ".htm": _load_html,
    ".pdf": _load_pdf,
    ".jsonl": _load_jsonl,
}
