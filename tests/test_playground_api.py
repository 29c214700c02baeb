"""The routes the playground calls: ``GET /v1/info``, ``POST /v1/files`` and ``/v1/reports``.

Through the real app over a real Edge shard and the real model, like ``test_api.py``. One app
serves the module (uploads become real jobs, run by the service's job thread); the few tests that
need other settings build their own, cheap app without a lifespan.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.pdfs import make_pdf

from eval.ladder import LadderRow, write_ladder_report
from eval.metrics import METRICS
from ingest.documents import Document
from ingest.embedding import SentenceTransformerEmbedder
from ingest.index import EdgeIndex
from ingest.loaders import SUPPORTED_SUFFIXES
from ingest.settings import Settings
from service import uploads
from service.api.app import create_app, package_version
from service.api.routes.reports import REPORT_CSP
from service.auth import Authenticator, KeyStore
from service.pipeline import RagPipeline
from service.reports import MAX_DEPTH, report_id
from service.retrieval import RetrievedChunk
from service.uploads import FileRefused, upload_name

MAX_FILES = 3
MAX_FILE_BYTES = 4096

FileSpec = tuple[str, bytes]


@dataclass
class Served:
    client: TestClient
    pipeline: RagPipeline
    reports: Path
    outside: Path


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder
) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("playground-api")
    reports, outside = root / "reports", root / "outside"
    outside.mkdir()
    rows = [  # every metric, delta and latency, as run_ladder fills them
        LadderRow("dense", "dense only", dict.fromkeys(METRICS, 0.61), 12.0, delta=0.0),
        LadderRow("hybrid", "dense + BM25, RRF", dict.fromkeys(METRICS, 0.66), 15.0, delta=0.05),
    ]
    write_ladder_report(rows, reports / "ladder-mini", "mini")
    settings = Settings(
        data_dir=root / "data",
        collection="kb",
        max_documents_per_request=MAX_FILES,
        max_file_bytes=MAX_FILE_BYTES,
        reports_dir=reports,
    )
    pipeline = RagPipeline.from_settings(
        settings, index=EdgeIndex(settings.data_dir), embedder=embedder
    )
    with TestClient(create_app(pipeline)) as client:
        yield Served(client, pipeline, reports, outside)


def upload(client: TestClient, files: list[FileSpec], **params: str) -> Any:
    return client.post("/v1/files", params=params, files=[("files", f) for f in files])


def finished_job(client: TestClient, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def accepted(client: TestClient, files: list[FileSpec], **params: str) -> dict[str, Any]:
    """Upload, expect 202, wait for the job to succeed; the 202 body."""
    response = upload(client, files, **params)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    assert response.headers["Location"] == f"/v1/jobs/{body['job']['id']}"
    job = finished_job(client, body["job"]["id"])
    assert job["state"] == "succeeded", job
    return body


def top_hit(client: TestClient, query: str, **filters: Any) -> dict[str, Any]:
    response = client.post("/v1/search", json={"query": query, "top_k": 1, "filters": filters})
    assert response.status_code == 200, response.text
    hit: dict[str, Any] = response.json()["results"][0]
    return hit


def outcomes(body: dict[str, Any]) -> dict[str, tuple[int, str | None]]:
    return {f["name"]: (f["documents"], f["error"]) for f in body["files"]}


# GET /v1/info --------------------------------------------------------------------------------


def test_info_describes_the_served_pipeline(served: Served) -> None:
    response = served.client.get("/v1/info")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "version": package_version(),
        "default_collection": "kb",
        "embedding_model": "all-MiniLM-L6-v2",
        "generator": "extractive",
        "llm_model": None,
        "reranker": None,
        "transforms": False,
        "defaults": {
            "top_k": 10,
            "mode": "hybrid",
            "fusion": "dbsf",
            "rrf_k": 60,
            "multi_query": 0,
            "hyde": False,
            "rerank": False,
        },
        "upload": {
            "max_files": MAX_FILES,
            "max_file_bytes": MAX_FILE_BYTES,
            "max_request_bytes": 16 * 1024 * 1024,
            "suffixes": list(SUPPORTED_SUFFIXES),
        },
        "reports": True,
    }
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", response.json()["version"])


class NamedReranker:
    name = "stub-reranker"

    def rerank(self, query: str, chunks: list[RetrievedChunk], top_k: int) -> list[RetrievedChunk]:
        return chunks[:top_k]


@pytest.fixture
def app_with(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> Iterator[Callable[..., TestClient]]:
    """A fresh app over other settings; no lifespan, so no job thread (nothing to ingest)."""
    pipelines: list[RagPipeline] = []

    def make(**overrides: Any) -> TestClient:
        settings = Settings(data_dir=tmp_path / f"data{len(pipelines)}", **overrides)
        pipeline = RagPipeline.from_settings(
            settings, index=EdgeIndex(settings.data_dir), embedder=embedder
        )
        pipelines.append(pipeline)
        return TestClient(create_app(pipeline))

    yield make
    for pipeline in pipelines:
        pipeline.close()


def test_info_follows_the_settings(
    app_with: Callable[..., TestClient], embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "llm",
        collection="notes",
        top_k=7,
        search_mode="dense",
        fusion="dbsf",
        rrf_k=20,
        multi_query=2,
        hyde=True,
        llm_base_url="http://127.0.0.1:9/v1",  # never called: /v1/info asks the LLM nothing
        llm_model="tiny-chat",
        max_file_bytes=1000,
        max_body_bytes=5000,
        reports_dir=tmp_path / "no-such-folder",
    )
    pipeline = RagPipeline.from_settings(
        settings, index=EdgeIndex(settings.data_dir), embedder=embedder, reranker=NamedReranker()
    )
    try:
        info = TestClient(create_app(pipeline)).get("/v1/info").json()
    finally:
        pipeline.close()
    assert info["default_collection"] == "notes"
    assert (info["generator"], info["llm_model"], info["transforms"]) == ("llm", "tiny-chat", True)
    assert info["reranker"] == "stub-reranker"
    assert info["defaults"] == {
        "top_k": 7,
        "mode": "dense",
        "fusion": "dbsf",
        "rrf_k": 20,
        "multi_query": 2,
        "hyde": True,
        "rerank": True,
    }
    assert info["upload"]["max_file_bytes"] == 1000
    assert info["upload"]["max_request_bytes"] == 5000
    assert info["reports"] is False  # configured, but not there

    # generator = "extractive" wins over a configured LLM; no reports folder at all
    plain = app_with(generator="extractive", llm_base_url="http://127.0.0.1:9/v1", reports_dir="")
    info = plain.get("/v1/info").json()
    assert (info["generator"], info["transforms"], info["reports"]) == ("extractive", True, False)


# POST /v1/files ------------------------------------------------------------------------------


def test_uploaded_markdown_and_text_become_searchable(served: Served) -> None:
    body = accepted(
        served.client,
        [
            ("volcanoes.md", b"# Volcanoes\n\nBasalt lava flows from shield volcanoes in Hawaii."),
            ("glaciers.txt", b"Glaciers carve U-shaped valleys as they grind down mountains."),
        ],
    )
    assert outcomes(body) == {"volcanoes.md": (1, None), "glaciers.txt": (1, None)}
    assert body["job"]["collection"] == "kb" and body["job"]["progress"]["documents_total"] == 2
    lava = top_hit(served.client, "shield volcano lava")
    assert (lava["doc_id"], lava["source"], lava["title"]) == (
        "volcanoes.md",
        "volcanoes.md",
        "Volcanoes",
    )
    ice = top_hit(served.client, "U-shaped valleys carved by ice")
    # The title of a text file is its name's stem, never the temporary copy's generated name.
    assert (ice["doc_id"], ice["title"]) == ("glaciers.txt", "glaciers")


def test_upload_goes_to_the_named_collection(served: Served) -> None:
    body = accepted(served.client, [("owls.md", b"Owls hunt at night.")], collection="birds")
    assert body["job"]["collection"] == "birds"
    assert "owls.md" in served.client.get("/v1/collections/birds/sources").json()
    bad = upload(served.client, [("owls.md", b"x")], collection="../birds")
    assert bad.status_code == 422 and "collection" in bad.json()["detail"]


def test_client_paths_are_reduced_to_base_names_and_never_written(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The temporary folder sits deep in a sandbox, so a name that climbed out of it would still
    # land inside the sandbox, where this test sees it.
    temp_root = tmp_path / "a" / "b" / "c"
    temp_root.mkdir(parents=True)
    monkeypatch.setattr("tempfile.tempdir", str(temp_root))
    copies: list[Path] = []
    copy = uploads._copy_bounded

    def recorded(stream: Any, target: Path, limit: int) -> None:
        copies.append(target)
        copy(stream, target, limit)

    monkeypatch.setattr(uploads, "_copy_bounded", recorded)
    body = accepted(
        served.client,
        [
            ("../../etc/passwd.md", b"Penguins huddle together through the Antarctic winter."),
            ("a\\..\\b.md", b"Lichens are a partnership of a fungus and an alga."),
        ],
    )
    assert outcomes(body) == {"passwd.md": (1, None), "b.md": (1, None)}
    assert top_hit(served.client, "penguins huddle in winter")["doc_id"] == "passwd.md"
    assert top_hit(served.client, "fungus and alga partnership")["source"] == "b.md"
    assert len(copies) == 2
    for target in copies:
        assert re.fullmatch(r"\d+\.md", target.name), target  # generated name + the suffix
        assert target.parent.parent == temp_root and target.parent.name.startswith("grounded-")
    kept = {temp_root, *temp_root.parents}
    leftovers = [p for p in tmp_path.rglob("*") if p not in kept]
    assert leftovers == [], leftovers  # nothing outside, and the copies are gone


def test_an_unsupported_or_oversize_file_fails_alone(served: Served) -> None:
    body = accepted(
        served.client,
        [
            ("tides.md", b"Tides follow the moon's pull on the oceans."),
            ("tool.EXE", b"MZ\x90\x00"),
            ("huge.txt", b"word " * MAX_FILE_BYTES),
        ],
    )
    files = outcomes(body)
    assert files["tides.md"] == (1, None)
    assert files["tool.EXE"][0] == 0
    assert (
        files["tool.EXE"][1] is not None and "unsupported file type '.exe'" in files["tool.EXE"][1]
    )
    assert files["huge.txt"][0] == 0
    assert f"over the limit of {MAX_FILE_BYTES} bytes" in str(files["huge.txt"][1])
    assert body["job"]["progress"]["documents_total"] == 1


def test_a_corrupt_pdf_fails_alone(served: Served) -> None:
    body = accepted(
        served.client,
        [
            ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 9 0 R >> endobj\n%%EOF"),
            ("comets.pdf", make_pdf("Comets grow tails of dust and gas near the sun.")),
        ],
    )
    files = outcomes(body)
    assert files["comets.pdf"] == (1, None)
    assert files["broken.pdf"][0] == 0 and files["broken.pdf"][1]
    assert top_hit(served.client, "comet tails of dust")["doc_id"] == "comets.pdf"


def test_bad_lines_of_json_lines_and_clashing_ids_are_reported(served: Served) -> None:
    first = b'{"id": "jl-1", "text": "Moss grows on the north side."}\n'
    body = accepted(
        served.client,
        [("notes.jsonl", first + b"{not json}\n"), ("jl-1", b"unused"), ("again.jsonl", first)],
    )
    files = outcomes(body)
    assert files["notes.jsonl"][0] == 1
    assert str(files["notes.jsonl"][1]).startswith("line 2: invalid JSON")
    assert files["again.jsonl"][0] == 0
    assert "'jl-1' is also in another file" in str(files["again.jsonl"][1])
    assert "unsupported file type 'jl-1'" in str(files["jl-1"][1])


def test_no_loadable_file_is_422_with_each_reason(served: Served) -> None:
    jobs_before = len(served.client.get("/v1/jobs").json())
    response = upload(served.client, [("empty.md", b""), ("photo.png", b"\x89PNG"), ("..", b"x")])
    assert response.status_code == 422, response.text
    body = response.json()
    assert [f["name"] for f in body["files"]] == ["empty.md", "photo.png", ".."]
    assert all(f["documents"] == 0 and f["error"] for f in body["files"])
    assert body["detail"].splitlines() == [f"{f['name']}: {f['error']}" for f in body["files"]]
    assert "empty file" in body["detail"] and "'..' is not a file name" in body["detail"]
    assert len(served.client.get("/v1/jobs").json()) == jobs_before  # no job for nothing


def test_too_many_files_is_413_before_any_is_loaded(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*_args: Any) -> None:
        raise AssertionError("files were loaded")

    monkeypatch.setattr("service.api.routes.files.load_uploads", never)
    response = upload(served.client, [(f"n{i}.md", b"text") for i in range(MAX_FILES + 1)])
    assert response.status_code == 413, response.text
    assert (
        f"{MAX_FILES + 1} files in one request; the limit is {MAX_FILES}"
        in response.json()["detail"]
    )
    missing = served.client.post("/v1/files", data={"other": "x"})
    assert missing.status_code == 422 and "files" in missing.json()["detail"]


def test_a_collection_of_another_model_is_409_before_any_file_is_read(
    served: Served, embedder: SentenceTransformerEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    served.pipeline.ingest([Document("x", "Some text.")], "frozen")
    monkeypatch.setattr(embedder, "name", "some-other-model")
    monkeypatch.setattr("service.api.routes.files.load_uploads", lambda *_: pytest.fail("read"))
    response = upload(served.client, [("a.md", b"text")], collection="frozen")
    assert response.status_code == 409, response.text


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("notes.md", "notes.md"),
        ("../../etc/passwd.md", "passwd.md"),
        ("a\\..\\b.md", "b.md"),
        ("C:\\Users\\me\\report.pdf", "report.pdf"),
        ("dir/sub/", None),
        ("", None),
        (None, None),
        (".", None),
        ("x/..", None),
        ("a" * 253 + ".md", None),
        ("nul\x00.md", None),
        ("del\x7f.md", None),
        ("evil\u202egpj.md", None),
        ("caf\u00e9 \u00fcber.md", "caf\u00e9 \u00fcber.md"),
    ],
)
def test_upload_names(raw: str | None, name: str | None) -> None:
    if name is None:
        with pytest.raises(FileRefused):
            upload_name(raw)
    else:
        assert upload_name(raw) == name


# GET /v1/reports -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report_tree(served: Served) -> Served:
    """Next to the ladder report: what the listing must skip."""
    reports, outside = served.reports, served.outside
    (outside / "secret.html").write_text("<title>secret</title>")
    (reports / "linked.html").symlink_to(outside / "secret.html")
    (reports / "linked-dir").symlink_to(outside, target_is_directory=True)
    (reports / ".hidden").mkdir()
    (reports / ".hidden" / "h.html").write_text("<title>hidden</title>")
    deep = reports.joinpath(*(f"d{i}" for i in range(MAX_DEPTH + 1)))
    deep.mkdir(parents=True)
    (deep / "deep.html").write_text("<title>too deep</title>")
    (deep.parent / "edge.HTML").write_text("<html><TITLE>\n Edge &amp; case </TITLE>x</html>")
    (reports / "notes.txt").write_text("not a report")
    return served


def test_reports_lists_the_ladder_report_and_skips_the_rest(report_tree: Served) -> None:
    listed = report_tree.client.get("/v1/reports")
    assert listed.status_code == 200, listed.text
    by_path = {r["path"]: r for r in listed.json()}
    edge = "/".join(f"d{i}" for i in range(MAX_DEPTH)) + "/edge.HTML"
    assert set(by_path) == {"ladder-mini/ladder.html", edge}
    ladder = by_path["ladder-mini/ladder.html"]
    assert ladder["title"] == "Retrieval ladder: mini"
    assert ladder["id"] == report_id("ladder-mini/ladder.html") and len(ladder["id"]) == 16
    assert ladder["bytes"] == (report_tree.reports / "ladder-mini" / "ladder.html").stat().st_size
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ladder["modified"])
    assert by_path[edge]["title"] == "Edge & case"
    assert listed.json()[0]["path"] == edge  # newest first


def test_a_report_is_served_as_inert_html(report_tree: Served) -> None:
    rid = report_id("ladder-mini/ladder.html")
    response = report_tree.client.get(f"/v1/reports/{rid}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["Content-Security-Policy"] == REPORT_CSP
    assert "sandbox" in REPORT_CSP and "script-src" not in REPORT_CSP
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "<title>Retrieval ladder: mini</title>" in response.text
    assert "data:image/png;base64," in response.text  # the chart travels inside the page


@pytest.mark.parametrize(
    "path",
    [
        "linked.html",  # a link is never listed, so its id is unknown
        "linked-dir/secret.html",
        ".hidden/h.html",
        "/".join(f"d{i}" for i in range(MAX_DEPTH + 1)) + "/deep.html",
        "nothing.html",
    ],
)
def test_unlisted_reports_are_404(report_tree: Served, path: str) -> None:
    response = report_tree.client.get(f"/v1/reports/{report_id(path)}")
    assert response.status_code == 404 and "no report" in response.json()["detail"]


@pytest.mark.parametrize("rid", ["ABCDEF0123456789", "0123", "g" * 16, "0" * 17])
def test_a_report_id_is_16_hex_digits_or_422(served: Served, rid: str) -> None:
    assert served.client.get(f"/v1/reports/{rid}").status_code == 422


def test_a_path_in_place_of_an_id_reads_nothing(served: Served) -> None:
    for raw in ("..%2F..%2Fetc%2Fpasswd", "%2E%2E%2F%2E%2E%2Fladder-mini%2Fladder.html"):
        response = served.client.get(f"/v1/reports/{raw}")
        assert response.status_code in (404, 422) and "<html" not in response.text


def test_a_missing_reports_folder_lists_nothing(
    app_with: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = app_with(reports_dir=tmp_path / "never-made")
    assert client.get("/v1/reports").json() == []
    assert client.get(f"/v1/reports/{report_id('ladder.html')}").status_code == 404
    assert app_with(reports_dir="").get("/v1/reports").json() == []


# Auth ----------------------------------------------------------------------------------------


def test_keys_and_scopes(
    tmp_path: Path, embedder: SentenceTransformerEmbedder, served: Served
) -> None:
    settings = Settings(data_dir=tmp_path / "data", reports_dir=served.reports)
    store = KeyStore(tmp_path / "keys.sqlite")
    reader, _ = store.create("acme", {"read"})
    writer, _ = store.create("acme", {"ingest"})
    pipeline = RagPipeline.from_settings(
        settings, index=EdgeIndex(settings.data_dir), embedder=embedder
    )
    auth = Authenticator(store, enabled=True, default_rate="1000/minute")
    with TestClient(create_app(pipeline, authenticator=auth)) as client:
        files = [("files", ("a.md", b"Auth test."))]
        rid = report_id("ladder-mini/ladder.html")
        for path in ("/v1/info", "/v1/reports", f"/v1/reports/{rid}"):
            assert client.get(path).status_code == 401
            assert (
                client.get(path, headers={"Authorization": f"Bearer {reader}"}).status_code == 200
            )
            assert client.get(path, headers={"X-API-Key": writer}).status_code == 403
        assert client.post("/v1/files", files=files).status_code == 401
        denied = client.post("/v1/files", files=files, headers={"X-API-Key": reader})
        assert denied.status_code == 403 and "'ingest' scope" in denied.json()["detail"]
        allowed = client.post("/v1/files", files=files, headers={"X-API-Key": writer})
        assert allowed.status_code == 202 and allowed.json()["job"]["tenant"] == "acme"


def test_symlinks_are_not_followed_even_as_the_only_content(tmp_path: Path) -> None:
    """The walk itself, without the app: a link to a folder full of reports lists nothing."""
    from service.reports import list_reports

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "r.html").write_text("<title>r</title>")
    root = tmp_path / "reports"
    root.mkdir()
    (root / "in").symlink_to(outside, target_is_directory=True)
    os.symlink(outside / "r.html", root / "r.html")
    assert list_reports(root) == []
    (root / "real.html").write_text("no title here")
    assert [(r.path, r.title) for r in list_reports(root)] == [("real.html", "real.html")]
