"""Shared fixtures: the real MiniLM model, and an index per Qdrant adapter.

Nothing here is mocked: ``index`` is a real Qdrant Edge shard on disk or qdrant-client's local
mode, and ``embedder`` is the real all-MiniLM-L6-v2 from the offline package.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from qdrant_client import QdrantClient

from ingest.build import build_embedder
from ingest.embedding import SentenceTransformerEmbedder
from ingest.index import EdgeIndex, VectorIndex
from ingest.index.server import ServerIndex
from ingest.settings import Settings

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never read the developer's GROUNDED_* variables or ./grounded.toml."""
    import os

    for key in list(os.environ):
        if key.startswith("GROUNDED_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    return build_embedder(Settings())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture(params=["edge", "server"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorIndex]:
    """The same tests run against Qdrant Edge and qdrant-client (local mode)."""
    idx: VectorIndex
    if request.param == "edge":
        idx = EdgeIndex(tmp_path / "edge-data")
    else:
        idx = ServerIndex(QdrantClient(":memory:"))
    yield idx
    idx.close()
