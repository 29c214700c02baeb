"""Loader limits (issue 9): file and document size caps, JSON Lines lines that fail alone,
relative ``source`` paths, and pruning that understands them. Real files, nothing mocked."""

from __future__ import annotations

import json
import os
import sys
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from support.pdfs import make_pdf

from ingest.documents import Document
from ingest.loaders import (
    LoadFailure,
    LoadLimits,
    SourcePaths,
    iter_documents,
    stale_documents,
)
from ingest.settings import Settings

# Small limits so oversize inputs stay small on disk.
SMALL = LoadLimits(max_document_bytes=1000, max_metadata_bytes=200, max_metadata_depth=3)


def load(
    paths: list[Path], limits: LoadLimits = LoadLimits()
) -> tuple[list[Document], list[LoadFailure]]:
    items = list(iter_documents(paths, limits))
    return (
        [i for i in items if isinstance(i, Document)],
        [i for i in items if isinstance(i, LoadFailure)],
    )


# Every file this process opens, recorded by a real audit hook (hooks cannot be removed, so it
# only records while a test watches).
_OPENED: list[str] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], str | bytes | Path):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


# Limits ------------------------------------------------------------------------------------------
def test_default_limits_are_the_settings_defaults() -> None:
    fields = Settings.model_fields
    defaults = LoadLimits()
    for name in (
        "max_file_bytes",
        "max_document_bytes",
        "max_metadata_depth",
        "max_metadata_bytes",
        "source_paths",
    ):
        assert getattr(defaults, name) == fields[name].default, name


def test_limits_from_settings() -> None:
    settings = Settings(
        max_file_bytes=10,
        max_document_bytes=20,
        max_metadata_depth=2,
        max_metadata_bytes=30,
        source_paths="absolute",
    )
    assert LoadLimits.from_settings(settings) == LoadLimits(10, 20, 2, 30, "absolute")


def test_limits_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="max_document_bytes"):
        LoadLimits(max_document_bytes=0)
    with pytest.raises(ValueError, match="source_paths"):
        LoadLimits(source_paths="server")  # type: ignore[arg-type]  # the value the type forbids


# File size ---------------------------------------------------------------------------------------
def test_oversize_file_refused_by_its_size_without_being_read(tmp_path: Path) -> None:
    global _OPENED
    limits = LoadLimits()
    big = tmp_path / "big.txt"
    with big.open("wb") as fh:  # sparse: the size is real, the disk use is not
        fh.truncate(limits.max_file_bytes + 1)
    (tmp_path / "good.txt").write_text("still ingested")
    _OPENED = []
    try:
        docs, failures = load([tmp_path], limits)
        opened = list(_OPENED)
    finally:
        _OPENED = None
    assert [d.text for d in docs] == ["still ingested"]
    assert [f.source for f in failures] == [str(big)]
    reason = failures[0].reason
    assert str(limits.max_file_bytes + 1) in reason and str(limits.max_file_bytes) in reason
    assert "GROUNDED_MAX_FILE_BYTES" in reason
    assert str(big) not in opened
    assert str(tmp_path / "good.txt") in opened  # the hook does see the files that are read


def test_file_at_the_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("x" * 100)
    docs, failures = load([path], LoadLimits(max_file_bytes=100))
    assert failures == [] and len(docs[0].text) == 100


def test_fifo_is_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    result: list[LoadFailure | Document] = []
    worker = threading.Thread(target=lambda: result.extend(iter_documents([fifo])), daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "loading a FIFO blocked"
    assert [str(r) for r in result] == [f"{fifo}: not a regular file"]


# Document size -----------------------------------------------------------------------------------
def _write_pdf(path: Path, text: str) -> None:
    path.write_bytes(make_pdf(text))


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("big.txt", lambda p: p.write_text("word " * 300)),
        ("big.md", lambda p: p.write_text("# Title\n\n" + "word " * 300)),
        ("big.html", lambda p: p.write_text(f"<html><body><p>{'word ' * 300}</p></body></html>")),
        ("big.pdf", lambda p: _write_pdf(p, "word " * 300)),
    ],
)
def test_document_over_the_limit_fails_alone(tmp_path: Path, name: str, write: Any) -> None:
    write(tmp_path / name)
    (tmp_path / "small.txt").write_text("short")
    docs, failures = load([tmp_path], SMALL)
    assert [d.text for d in docs] == ["short"]
    assert [f.source for f in failures] == [str(tmp_path / name)]
    reason = failures[0].reason
    assert "GROUNDED_MAX_DOCUMENT_BYTES" in reason and "1000" in reason


def test_html_markup_is_capped_before_parsing(tmp_path: Path) -> None:
    # 4 x max_document_bytes of markup: BeautifulSoup costs ~60 bytes of memory per byte.
    tags = "<p><b></b></p>" * 290  # 4060 bytes of markup, 2 bytes of text
    (tmp_path / "tags.html").write_text(f"<html><body>{tags}ok</body></html>")
    (tmp_path / "page.html").write_text(f"<html><body>{'<i></i>' * 400}<p>fine</p></body></html>")
    docs, failures = load([tmp_path], SMALL)
    assert [d.text for d in docs] == ["fine"]
    assert [f.source for f in failures] == [str(tmp_path / "tags.html")]
    assert "over the limit of 4000 bytes of markup" in failures[0].reason
    assert "GROUNDED_MAX_DOCUMENT_BYTES" in failures[0].reason


def test_document_limit_counts_utf8_bytes_not_characters(tmp_path: Path) -> None:
    (tmp_path / "at_limit.txt").write_bytes(b"\xef\xbb\xbf" + b"x" * 1000)  # BOM is not text
    (tmp_path / "accents.txt").write_text("é" * 501, encoding="utf-8")  # 501 chars, 1002 bytes
    docs, failures = load([tmp_path], SMALL)
    assert [len(d.text) for d in docs] == [1000]
    assert len(failures) == 1 and failures[0].source.endswith("accents.txt")
    assert "document text is 1002 bytes" in failures[0].reason


# JSON Lines --------------------------------------------------------------------------------------
def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"k": value}
    return value


def _good(doc_id: str) -> str:
    return json.dumps({"_id": doc_id, "title": f"T{doc_id}", "text": f"text of {doc_id}"})


BAD_LINES: list[tuple[str, str]] = [
    ('{"_id": "nan", "text": "x", "metadata": {"score": NaN}}', "NaN is not valid JSON"),
    ('{"_id": "inf", "text": "x", "metadata": {"v": Infinity}}', "Infinity is not valid JSON"),
    ('{"_id": "ninf", "text": "x", "rank": -Infinity}', "-Infinity is not valid JSON"),
    ('{"_id": "overflow", "text": "x", "metadata": {"v": 1e999}}', "overflows to infinity"),
    (json.dumps({"_id": "deep", "text": "x", "metadata": _deep(4)}), "nests deeper than 3"),
    (json.dumps({"_id": "int", "text": "x", "metadata": {"n": 2**64}}), "64-bit range"),
    ('{"_id": "digits", "text": "x", "n": ' + "9" * 5000 + "}", "invalid JSON"),
    (json.dumps({"_id": "meta", "text": "x", "metadata": {"b": "y" * 300}}), "limit is 200"),
    ('{"_id": "broken", "text": ', "invalid JSON"),
    (json.dumps({"_id": "long", "text": "x", "pad": "p" * 200_000}), "line is longer than"),
    (json.dumps({"_id": "huge", "text": "y" * 1001}), "GROUNDED_MAX_DOCUMENT_BYTES"),
    ('{"_id": "surrogate", "text": "a\\ud800b"}', "unpaired surrogate"),
    ("[" * 200_000 + "]" * 200_000, "line is longer than"),
    ("[" * 30_000 + "]" * 30_000, "nested too deeply"),
    ('{"_id": {"a": 1}, "text": "x"}', "'_id' must be a string or an integer"),
]


def test_jsonl_bad_lines_fail_alone_and_good_lines_load(tmp_path: Path) -> None:
    lines: list[bytes] = []
    expected: list[tuple[int, str]] = []
    good: list[str] = []
    for n, (bad, reason) in enumerate(BAD_LINES):
        lines.append(_good(f"g{n}").encode())
        good.append(f"g{n}")
        lines.append(bad.encode())
        expected.append((len(lines), reason))
    lines.append(b'{"_id": "latin", "text": "caf\xe9"}')  # not UTF-8: fails alone
    expected.append((len(lines), "not valid UTF-8"))
    lines.append(b"")
    lines.append(_good("last").encode())  # no newline at the end of the file
    good.append("last")
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines))

    docs, failures = load([path], SMALL)

    assert [d.id for d in docs] == good
    assert [f.line for f in failures] == [line for line, _ in expected]
    for failure, (line, reason) in zip(failures, expected, strict=True):
        assert reason in failure.reason, (line, failure.reason)
        assert str(failure).startswith(f"{path}:{line}: ")
    assert all(f.source == str(path) for f in failures)


def test_jsonl_is_streamed_past_the_file_limit(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(_good(str(i)) for i in range(500)) + "\n")
    limits = LoadLimits(max_file_bytes=1024)
    assert path.stat().st_size > limits.max_file_bytes
    docs, failures = load([path], limits)
    assert failures == [] and len(docs) == 500


def test_jsonl_endless_line_costs_no_memory(tmp_path: Path) -> None:
    path = tmp_path / "one_line.jsonl"
    with path.open("w") as fh:
        fh.write('{"_id": "a", "text": "')
        for _ in range(40):
            fh.write("z" * 1_000_000)
        fh.write('"}\n' + _good("after") + "\n")
    tracemalloc.start()
    try:
        docs, failures = load([path], SMALL)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [d.id for d in docs] == ["after"]
    assert [(f.line, "line is longer than" in f.reason) for f in failures] == [(1, True)]
    assert peak < 8 * 1024 * 1024, peak  # the 40 MB line was never held


def test_jsonl_line_cap_leaves_room_for_escaped_text(tmp_path: Path) -> None:
    # 100 kB of text that JSON spells in 600 kB: the line is long, the document is not.
    limits = LoadLimits(max_document_bytes=100_000)
    path = tmp_path / "escaped.jsonl"
    path.write_text(json.dumps({"_id": "e", "text": "\x01" * 100_000}) + "\n")
    assert path.stat().st_size > limits.max_document_bytes + limits.max_metadata_bytes + 65536
    docs, failures = load([path], limits)
    assert failures == [] and len(docs[0].text) == 100_000


def test_jsonl_of_blank_lines_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "blank.jsonl"
    path.write_text("\n  \n\n")
    docs, failures = load([path])
    assert docs == [] and [(f.line, f.reason) for f in failures] == [(None, "empty file")]


def test_jsonl_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf" + _good("1").encode() + b"\r\n" + _good("2").encode() + b"\r\n"
    )
    docs, failures = load([path])
    assert failures == [] and [d.id for d in docs] == ["1", "2"]


# Sources -----------------------------------------------------------------------------------------
def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "kb"
    (root / "sub").mkdir(parents=True)
    (root / "a.md").write_text("# A\n\nText a.")
    (root / "sub" / "b.txt").write_text("Text b.")
    (root / "sub" / "c.jsonl").write_text(_good("j1") + "\n")
    (tmp_path / "single.txt").write_text("Named directly.")
    return root


def test_relative_sources_expose_no_server_path(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    docs, failures = load([root, tmp_path / "single.txt"])
    assert failures == []
    assert {d.id: d.source for d in docs} == {
        "kb/a.md": "kb/a.md",
        "kb/sub/b.txt": "kb/sub/b.txt",
        "j1": "kb/sub/c.jsonl",
        "single.txt": "single.txt",
    }
    assert not any(str(tmp_path) in d.source for d in docs)


def test_relative_sources_of_typed_relative_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _tree(tmp_path)
    monkeypatch.chdir(root)
    docs, _ = load([Path(".")])  # "." is named by the folder's own name
    assert sorted(d.source for d in docs) == ["kb/a.md", "kb/sub/b.txt", "kb/sub/c.jsonl"]
    monkeypatch.chdir(tmp_path)
    docs, _ = load([Path("kb/sub/b.txt")])
    assert [(d.id, d.source) for d in docs] == [("b.txt", "b.txt")]


def test_absolute_sources_when_configured(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    docs, failures = load([root, tmp_path / "single.txt"], LoadLimits(source_paths="absolute"))
    assert failures == []
    assert {d.id: d.source for d in docs} == {
        "kb/a.md": str((root / "a.md").resolve()),
        "kb/sub/b.txt": str((root / "sub" / "b.txt").resolve()),
        "j1": str((root / "sub" / "c.jsonl").resolve()),
        "single.txt": str((tmp_path / "single.txt").resolve()),
    }


# Pruning -----------------------------------------------------------------------------------------
def _run(
    roots: list[Path], limits: LoadLimits = LoadLimits()
) -> tuple[dict[str, str], set[str], set[str]]:
    """One CLI-like load: (doc id -> source, ids seen, failed sources)."""
    docs, failures = load(roots, limits)
    return {d.id: d.source for d in docs}, {d.id for d in docs}, {f.source for f in failures}


def _second_run_after_changes(tmp_path: Path, root: Path) -> tuple[set[str], set[str]]:
    (root / "a.md").unlink()  # deleted: stale
    (root / "sub" / "b.txt").write_bytes(b"\xff\xfe broken")  # broken: kept
    (root / "sub" / "c.jsonl").write_text(_good("j1") + "\nnot json\n")  # partly broken: kept
    _, seen, failed = _run([root])
    return seen, failed


@pytest.mark.parametrize("mode", ["relative", "absolute"])
def test_prune_with_relative_or_absolute_sources(tmp_path: Path, mode: SourcePaths) -> None:
    root = _tree(tmp_path)
    (root / "gone.jsonl").write_text(_good("j2") + "\n")
    other = tmp_path / "kb2"  # shares a prefix with "kb": not under it
    other.mkdir()
    (other / "x.txt").write_text("Other root.")
    limits = LoadLimits(source_paths=mode)
    stored, _, _ = _run([root, other], limits)
    stored["api-doc"] = "kb/pasted"  # from the API, not a file: under the root's name
    stored["api-other"] = "elsewhere/x"
    (root / "gone.jsonl").unlink()

    seen, failed = _second_run_after_changes(tmp_path, root)

    # "kb/pasted" is under the root's name whatever the mode of the stored file sources.
    assert stale_documents(stored, [root], seen, failed) == ["api-doc", "j2", "kb/a.md"]


def test_prune_matches_old_absolute_sources_after_switching_to_relative(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    stored, _, _ = _run([root], LoadLimits(source_paths="absolute"))
    seen, failed = _second_run_after_changes(tmp_path, root)  # relative, the default
    assert stale_documents(stored, [root], seen, failed) == ["kb/a.md"]


def test_prune_a_jsonl_named_directly_and_typed_relative_roots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(_good(i) for i in ("1", "2", "3")) + "\n")
    stored, _, _ = _run([corpus])
    assert set(stored.values()) == {"corpus.jsonl"}
    corpus.write_text(_good("1") + "\n" + _good("3") + "\n")
    monkeypatch.chdir(tmp_path)
    _, seen, failed = _run([Path("corpus.jsonl")])
    assert stale_documents(stored, [Path("corpus.jsonl")], seen, failed) == ["2"]
    corpus.write_text(_good("1") + "\n{bad\n")  # a failed line keeps the file's documents
    _, seen, failed = _run([Path("corpus.jsonl")])
    assert stale_documents(stored, [Path("corpus.jsonl")], seen, failed) == []


def test_prune_keeps_documents_named_by_a_relative_failure(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    stored, seen, _ = _run([root])
    # The CLI reports a duplicate id under the document's own (relative) source.
    seen.discard("kb/a.md")
    assert stale_documents(stored, [root], seen, {"kb/a.md"}) == []
    assert stale_documents(stored, [root], seen, set()) == ["kb/a.md"]
