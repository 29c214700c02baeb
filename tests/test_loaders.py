from pathlib import Path

import pytest
from support.paths import SHARED
from support.pdfs import make_pdf

from ingest.documents import Document
from ingest.loaders import LoadFailure, html_to_text, iter_documents


def load(paths: list[Path]) -> tuple[list[Document], list[LoadFailure]]:
    items = list(iter_documents(paths))
    return (
        [i for i in items if isinstance(i, Document)],
        [i for i in items if isinstance(i, LoadFailure)],
    )


def test_folder_of_every_supported_type(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("Plain text about llamas.")
    (root / "b.md").write_text("# Guide\n\nSome text.\n\n## Install\n\nRun it.")
    (root / "sub" / "c.html").write_text(
        "<html><head><title>Page</title><style>p{}</style></head>"
        "<body><h1>Top</h1><p>Para one.</p><script>var x;</script>"
        "<h2>Sub</h2><p>Two</p></body></html>"
    )
    (root / "sub" / "d.pdf").write_bytes(make_pdf("Portable document text."))
    (root / "e.jsonl").write_text(
        '{"_id": "x1", "title": "T1", "text": "first", "metadata": {"year": 2020}}\n'
        '{"id": "x2", "text": "second"}\n'
    )
    (root / ".hidden").mkdir()
    (root / ".hidden" / "skip.txt").write_text("never loaded")
    docs, failures = load([root])
    assert failures == []
    by_id = {d.id: d for d in docs}
    assert set(by_id) == {
        "corpus/a.txt",
        "corpus/b.md",
        "corpus/sub/c.html",
        "corpus/sub/d.pdf",
        "x1",
        "x2",
    }
    assert by_id["corpus/b.md"].title == "Guide"
    html = by_id["corpus/sub/c.html"]
    assert html.title == "Page" and "# Top" in html.text and "## Sub" in html.text
    assert "var x" not in html.text and "p{}" not in html.text
    assert "Portable document text." in by_id["corpus/sub/d.pdf"].text
    assert by_id["x1"].metadata == {"year": 2020} and by_id["x1"].title == "T1"
    # Sources are relative to the root's parent: no server path is stored or served.
    assert {d.id: d.source for d in docs} == {
        "corpus/a.txt": "corpus/a.txt",
        "corpus/b.md": "corpus/b.md",
        "corpus/sub/c.html": "corpus/sub/c.html",
        "corpus/sub/d.pdf": "corpus/sub/d.pdf",
        "x1": "corpus/e.jsonl",
        "x2": "corpus/e.jsonl",
    }


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog", "corrupt PDF"),
        ("fake.pdf", b"hello, not a pdf", "not a PDF"),
        ("bin.txt", b"abc\x00\x01\x02def", "binary"),
        ("latin1.txt", "café crème".encode("latin-1"), "not valid UTF-8"),
        ("empty.md", b"   \n", "empty file"),
        ("image.png", b"\x89PNG\r\n", "unsupported file type"),
    ],
)
def test_bad_file_fails_alone(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    (tmp_path / name).write_bytes(content)
    (tmp_path / "good.txt").write_text("still ingested")
    docs, failures = load([tmp_path])
    assert [d.text for d in docs] == ["still ingested"]
    assert len(failures) == 1
    assert failures[0].source.endswith(name)
    assert reason in failures[0].reason


def test_jsonl_bad_lines_reported_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"_id": "1", "text": "ok"}\nnot json\n{"_id": "2"}\n{"_id": "1", "text": "dup"}\n'
    )
    docs, failures = load([path])
    assert [d.id for d in docs] == ["1"]
    assert [(f.line, f.reason.split(":")[0]) for f in failures] == [
        (2, "invalid JSON"),
        (3, "document '2' has no 'text'"),
        (4, "duplicate id '1' in this file"),
    ]
    assert str(failures[0]).startswith(f"{path}:2:")


def test_missing_path_is_a_failure(tmp_path: Path) -> None:
    docs, failures = load([tmp_path / "nope.md"])
    assert docs == [] and "no such file" in failures[0].reason


def test_beir_fixture_corpus_loads_as_is() -> None:
    corpus = Path(__file__).parent / "fixtures" / "mini_beir" / "corpus.jsonl"
    docs, failures = load([corpus])
    lines = corpus.read_text().splitlines()
    assert failures == [] and len(docs) == len(lines) >= 10
    assert all(d.text and d.id for d in docs)


SCIFACT_CORPUS = SHARED / "scifact" / "corpus.jsonl"


@pytest.mark.skipif(not SCIFACT_CORPUS.exists(), reason=f"SciFact is not at {SCIFACT_CORPUS}")
def test_beir_scifact_corpus_loads_as_is() -> None:
    docs, failures = load([SCIFACT_CORPUS])
    assert failures == [] and len(docs) == 5183
    assert all(d.text and d.id for d in docs)


def test_html_to_text_keeps_heading_levels() -> None:
    text, title = html_to_text("<h1>A</h1><p>x</p><h3>B</h3><ul><li>y</li></ul>")
    assert title == "A"
    assert text.splitlines()[0] == "# A" and "### B" in text and "y" in text
