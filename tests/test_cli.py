"""The `grounded` command as a user runs it: real processes, real files, a real server."""

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.cli_runner import REPO, grounded
from support.pdfs import make_pdf


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "kb"
    root.mkdir()
    (root / "guide.md").write_text("# Guide\n\nInstall with pip. Then run the server.\n")
    (root / "notes.txt").write_text("Glaciers retreat as the climate warms.")
    (root / "paper.pdf").write_bytes(make_pdf("Photosynthesis converts light into sugar."))
    (root / "broken.pdf").write_bytes(b"%PDF-1.7\n%\xe2\xe3 truncated garbage")
    return root


@pytest.mark.slow  # seven `grounded` processes, each loading the model
def test_ingest_reports_bad_pdf_and_keeps_the_rest(tmp_path: Path, corpus: Path) -> None:
    data = tmp_path / "data"
    # Written from a process of its own (as on a GPU); the runs after it open the shard here.
    process = {"GROUNDED_INGEST_INDEX_PROCESS": "on"}
    first = grounded(
        "ingest", str(corpus), "-c", "kb", "--json", data_dir=data, check_rc=1, env=process
    )
    assert "broken.pdf" in first.stderr and "corrupt PDF" in first.stderr
    report = json.loads(first.stdout)
    assert report["added"] == 3 and [
        f["source"].endswith("broken.pdf") for f in report["failures"]
    ] == [True]

    (corpus / "broken.pdf").unlink()
    (corpus / "notes.txt").unlink()
    again = json.loads(
        grounded("ingest", str(corpus), "-c", "kb", "--json", "--prune", data_dir=data).stdout
    )
    assert (again["unchanged"], again["added"], again["deleted"], again["chunks_written"]) == (
        2,
        0,
        1,
        0,
    )

    found = json.loads(
        grounded("search", "how do plants make sugar", "-c", "kb", "--json", data_dir=data).stdout
    )
    assert found["results"][0]["doc_id"] == "kb/paper.pdf"
    assert set(found) == {
        "collection",
        "mode",
        "fusion",
        "results",
        "timings",
        "route",
        "transforms",
        "warnings",
    }

    answer = json.loads(
        grounded("ask", "how do plants make sugar", "-c", "kb", "--json", data_dir=data).stdout
    )
    assert (
        answer["generator"] == "extractive" and answer["citations"][0]["doc_id"] == "kb/paper.pdf"
    )
    no_llm = grounded("ask", "sugar?", "-c", "kb", "--hyde", data_dir=data, check_rc=1)
    assert "HyDE needs an LLM" in no_llm.stderr

    assert "deleted 1 of 1" in grounded("delete", "kb/guide.md", "-c", "kb", data_dir=data).stdout
    grounded("delete", "kb/guide.md", "-c", "kb", data_dir=data, check_rc=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    data, port = tmp_path / "served", _free_port()
    env = {**os.environ, "GROUNDED_DATA_DIR": str(data)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "-c", "kb"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
    yield url, data
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.slow  # starts a `grounded serve` process
def test_second_process_fails_fast_then_goes_through_the_server(
    server: tuple[str, Path], corpus: Path
) -> None:
    url, data = server
    (corpus / "broken.pdf").unlink()
    blocked = grounded("ingest", str(corpus), "-c", "kb", data_dir=data, check_rc=1)
    assert "in use by another grounded process" in blocked.stderr and "--server" in blocked.stderr

    via = json.loads(
        grounded("ingest", str(corpus), "-c", "kb", "--json", "--server", url, data_dir=data).stdout
    )
    assert via["added"] == 3
    hits = json.loads(
        grounded(
            "search", "glaciers and climate", "-c", "kb", "--json", "--server", url, data_dir=data
        ).stdout
    )
    assert hits["results"][0]["doc_id"] == "kb/notes.txt"
    (corpus / "notes.txt").unlink()
    pruned = json.loads(
        grounded(
            "ingest", str(corpus), "-c", "kb", "--json", "--prune", "--server", url, data_dir=data
        ).stdout
    )
    assert (pruned["unchanged"], pruned["deleted"]) == (2, 1)
