"""Schemathesis against the live OpenAPI schema of the real app: every operation, bounded.

Each operation gets schema examples, the coverage phase (boundary and invalid values derived
from the schema) and ``MAX_EXAMPLES`` generated cases, valid and invalid, with a fixed seed
(``derandomize``), so a CI failure reproduces locally. Every response is checked for:

- ``not_a_server_error``: no 5xx;
- ``status_code_conformance``: the status is one the operation documents;
- ``content_type_conformance`` and ``response_schema_conformance``: the body is what the schema
  says for that status (errors included: ``service/api/errors.py`` documents them);
- no file or folder appears outside the data directory (a contained sandbox, see ``contain``).

Random data rarely gets past validation to an answer, so ``test_known_requests_conform`` sends
the requests that do (answers, ``stream: true`` on ``/v1/query`` and ``/v1/chat/completions``,
whose Server-Sent Events schemathesis reads up to its event limit, a report by an id the listing
gave) and the errors fuzzing seldom reaches (404, 413) through the same checks. Nothing is left
out: every operation in the schema is fuzzed, streaming variants included.

``POST /v1/files`` takes ``multipart/form-data``. schemathesis generates for it (each item of the
``files`` array becomes a part with a file name, the field's name plus the extension of a file
format it recognises, such as ``files`` or ``files.pdf``), so the operation is fuzzed like the
others; but no generated name has a suffix the loaders read, so every generated upload is refused
(422). The known requests send real files (``.md``, ``.txt``, a bad type, too many for the body)
as the transport's ``files``, to reach the 202 and check its body against the schema too.

The app is built like ``test_api.py``'s: a :class:`RagPipeline` over an Edge shard in a
temporary directory with the real MiniLM embedder and a small collection, auth at its default
(off on loopback). To fuzz with auth on, make :func:`request_headers` return a key's header.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support.hostile import BEYOND_INT64, COLLECTION_NAMES, tree

from ingest.documents import Document
from ingest.embedding import SentenceTransformerEmbedder
from ingest.index import EdgeIndex
from ingest.settings import Settings
from service.api.app import create_app
from service.pipeline import RagPipeline
from service.reports import report_id

pytestmark = pytest.mark.slow  # hundreds of generated requests per operation

MAX_EXAMPLES = 100  # generated cases per operation, on top of examples and coverage cases
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
DOCS = [
    Document("bees", "Honey bees pollinate crops with the waggle dance.", "Bees", "", {"y": 1}),
    Document("rome", "Roman aqueducts carried water by gravity.", "Rome", "", {"y": 2}),
]
# Mixed into generated strings and integers (schemathesis dictionaries): the review's attacks
# and names that exist. They reach parameters more than optional body fields.
HOSTILE_STRINGS = [
    *(COLLECTION_NAMES[k] for k in ("dotdot", "inner-dotdot", "sibling", "nul", "300-bytes")),
    "/some/dir",  # sent inside the sandbox, see contain()
    "metadata.",
    "metadata..",
    "grounded:kb",  # not "kb" itself: DELETE /v1/collections/kb would drop the collection
    "grounded:../../x",
    "bees",
]
HOSTILE_INTEGERS = [BEYOND_INT64, -(2**63) - 1, 2**63 - 1, 0, -1]
MAX_BODY_BYTES = 4_096  # small, so that fuzzed bodies reach the 413 too
NESTING = 12  # folders between the sandbox and the data directory: room for ``../`` names
REPORT = "ladder-kb/ladder.html"  # under the sandbox's reports folder


def request_headers() -> dict[str, str]:
    """Headers every fuzzed request carries; ``{"Authorization": "Bearer ..."}`` with auth on."""
    return {}


@dataclass
class Sandbox:
    """A temporary ``root`` holding the data directory ``NESTING`` folders down, and
    ``root/outside``, where absolute collection names are sent instead of the real root."""

    root: Path
    data_dir: Path
    outside: Path
    layout: frozenset[str] = frozenset()  # what is outside the data directory at the start
    app: Any = None

    def outside_entries(self) -> frozenset[str]:
        return frozenset(tree(self.root, exclude=self.data_dir))


@pytest.fixture
def sandbox(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> Iterator[Sandbox]:
    root = tmp_path / "fuzz"
    data_dir = root.joinpath(*(f"d{i}" for i in range(NESTING)), "data")
    outside = root / "outside"
    outside.mkdir(parents=True)
    reports = root / "reports"
    (reports / REPORT).parent.mkdir(parents=True)
    (reports / REPORT).write_text("<!doctype html><title>Retrieval ladder: kb</title><p>0.61</p>")
    settings_ = Settings(
        data_dir=data_dir,
        collection="kb",
        max_top_k=20,
        max_body_bytes=MAX_BODY_BYTES,
        reports_dir=reports,
    )
    pipeline = RagPipeline.from_settings(settings_, index=EdgeIndex(data_dir), embedder=embedder)
    pipeline.ingest(DOCS, "kb")
    box = Sandbox(root, data_dir, outside)
    box.layout = box.outside_entries()
    box.app = create_app(pipeline)
    yield box
    pipeline.close()  # schemathesis ends the app's lifespan (closing it too) after each test


@pytest.fixture
def api_schema(sandbox: Sandbox) -> Any:
    """The app's own ``/openapi.json``, loaded through ASGI like a client would."""
    config = schemathesis.Config.from_dict(
        {
            "dictionaries": {
                "strings": {"values": HOSTILE_STRINGS},
                "integers": {"values": HOSTILE_INTEGERS},
            },
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "dictionaries": {
                    "string": {"dictionary": "strings", "probability": 0.25},
                    "integer": {"dictionary": "integers", "probability": 0.1},
                },
            },
            "phases": {"stateful": {"enabled": False}},
        }
    )
    return schemathesis.openapi.from_asgi(
        "/openapi.json", sandbox.app, config=config, headers=request_headers()
    )


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32's ``from_fixture`` reads ``Node._nodeid``, gone in pytest 9.2."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


def contain(case: Any, box: Sandbox) -> None:
    """Keep a fuzzed collection name's writes inside the sandbox, on an unfixed server too.

    Tests run as root on some machines, where an absolute name such as ``/x`` would be created
    at the real root: it is sent as ``<outside>/x`` instead, still an absolute path the server
    must refuse. A name whose ``..`` climb out of the sandbox is not sent at all (rare);
    ``test_hostile.py`` sends those on purpose.
    """
    if not isinstance(case.body, dict) or not isinstance(case.body.get("collection"), str):
        return
    name = case.body["collection"]
    if os.path.isabs(name):
        name = case.body["collection"] = f"{box.outside}{name}"
    target = os.path.normpath(os.path.join(box.data_dir, "collections", name))
    if os.path.commonpath([target, str(box.root)]) != str(box.root):
        hypothesis.reject()


def check_nothing_escaped(box: Sandbox) -> None:
    """Fail when the request created anything outside the data directory (after removing it,
    so the next case starts clean and a shrunk example still fails)."""
    escaped = sorted(box.outside_entries() - box.layout)
    if not escaped:
        return
    for rel in reversed(escaped):  # children before their folders
        path = box.root / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    raise AssertionError(f"the request wrote outside the data directory: {escaped[:5]}")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_conforms(case: Any, sandbox: Sandbox) -> None:
    contain(case, sandbox)
    case.call_and_validate(headers=request_headers(), checks=CHECKS)
    check_nothing_escaped(sandbox)


CHAT = [{"role": "user", "content": "What do bees share?"}]
Files = list[tuple[str, bytes]]
"""A multipart body: the parts of the ``files`` field, as (file name, content)."""
KNOWN: list[tuple[str, str, dict[str, str], dict[str, Any] | Files | None, int]] = [
    ("GET", "/healthz", {}, None, 200),
    ("GET", "/v1/collections", {}, None, 200),
    ("GET", "/v1/models", {}, None, 200),
    ("GET", "/v1/collections/{collection}/sources", {"collection": "kb"}, None, 200),
    ("GET", "/v1/collections/{collection}/sources", {"collection": "nope"}, None, 404),
    ("POST", "/v1/search", {}, {"query": "waggle dance"}, 200),
    ("POST", "/v1/search", {}, {"query": "bees", "filters": {"metadata.y": {"gte": 1}}}, 200),
    ("POST", "/v1/search", {}, {"query": "bees", "collection": "nope"}, 404),
    ("POST", "/v1/search", {}, {"query": "x" * MAX_BODY_BYTES}, 413),
    ("POST", "/v1/search", {}, {"query": "bees", "top_k": 0}, 422),
    ("POST", "/v1/query", {}, {"query": "What do bees share?"}, 200),
    ("POST", "/v1/query", {}, {"query": "What do bees share?", "stream": True}, 200),
    ("POST", "/v1/chat/completions", {}, {"messages": CHAT}, 200),
    ("POST", "/v1/chat/completions", {}, {"messages": CHAT, "model": "grounded:kb"}, 200),
    ("POST", "/v1/chat/completions", {}, {"messages": CHAT, "stream": True}, 200),
    ("POST", "/v1/chat/completions", {}, {"messages": CHAT, "model": "grounded:nope"}, 404),
    ("POST", "/v1/ingest", {}, {"documents": [{"id": "n", "text": "A note on comets."}]}, 202),
    ("GET", "/v1/jobs", {}, None, 200),
    ("GET", "/v1/jobs/{job_id}", {"job_id": "0" * 32}, None, 404),
    ("DELETE", "/v1/jobs/{job_id}", {"job_id": "0" * 32}, None, 404),
    ("POST", "/v1/delete", {}, {"doc_ids": ["rome"]}, 200),
    ("GET", "/v1/info", {}, None, 200),
    ("GET", "/v1/reports", {}, None, 200),
    ("GET", "/v1/reports/{report_id}", {"report_id": report_id(REPORT)}, None, 200),
    ("GET", "/v1/reports/{report_id}", {"report_id": "0" * 16}, None, 404),
    (
        "POST",
        "/v1/files",
        {},
        [("ants.md", b"# Ants\n\nAnts farm fungi."), ("n.txt", b"Owls.")],
        202,
    ),
    ("POST", "/v1/files", {}, [("ants.md", b"Ants."), ("tool.exe", b"MZ")], 202),
    ("POST", "/v1/files", {}, [("tool.exe", b"MZ"), ("empty.md", b"")], 422),
    ("POST", "/v1/files", {}, [("big.txt", b"x" * MAX_BODY_BYTES)], 413),
]


def _known_id(method: str, path: str, body: object, status: int) -> str:
    if isinstance(body, list):
        return f"{method} {path} {status} {'+'.join(name for name, _ in body)}"
    stream = isinstance(body, dict) and body.get("stream")
    return f"{method} {path} {status}{' stream' if stream else ''}"


@pytest.mark.parametrize(
    ("method", "path", "path_parameters", "body", "status"),
    KNOWN,
    ids=[_known_id(m, p, b, s) for m, p, _, b, s in KNOWN],
)
def test_known_requests_conform(
    api_schema: Any,
    method: str,
    path: str,
    path_parameters: dict[str, str],
    body: dict[str, Any] | Files | None,
    status: int,
) -> None:
    """The paths random data rarely reaches (answers, streams, uploads, 404, 413) meet the same
    checks. A multipart body goes to the transport as ``files``, since a generated case names
    its file parts after the field, not as a client would."""
    operation = api_schema[path][method]
    kwargs: dict[str, Any] = {"path_parameters": path_parameters}
    transport: dict[str, Any] = {}
    if isinstance(body, list):
        transport["files"] = [("files", part) for part in body]
    elif body is not None:
        kwargs.update(body=body, media_type="application/json")
    case = operation.Case(**kwargs)
    response = case.call_and_validate(headers=request_headers(), checks=CHECKS, **transport)
    assert response.status_code == status, response.text
