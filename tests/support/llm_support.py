"""A small real pipeline (Qdrant Edge + MiniLM) wired to an LLM endpoint, for the LLM tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ingest.documents import Document
from ingest.embedding import Embedder
from ingest.index import EdgeIndex
from ingest.settings import Settings
from service.pipeline import RagPipeline

DOCS = [
    Document(
        id="cats",
        title="Cats",
        text="Cats purr at a frequency of 25 to 150 Hz. Purring often signals contentment, "
        "but cats also purr when they are injured.",
    ),
    Document(
        id="qdrant",
        title="Qdrant",
        text="Qdrant stores dense and sparse vectors in one collection and fuses the two result "
        "lists with reciprocal rank fusion.",
    ),
    Document(
        id="paris",
        title="Paris",
        text="Paris is the capital of France. The Eiffel Tower was completed in 1889 for the "
        "World's Fair.",
    ),
    Document(
        id="bm25",
        title="BM25",
        text="BM25 ranks documents by term frequency with saturation and by inverse document "
        "frequency, normalised by document length.",
    ),
    Document(
        id="bread",
        title="Sourdough",
        text="Sourdough bread rises because wild yeast and lactic acid bacteria ferment the "
        "dough over many hours.",
    ),
]


def llm_pipeline(
    tmp_path: Path, embedder: Embedder, llm_url: str | None, **overrides: Any
) -> RagPipeline:
    """Pipeline over DOCS in collection "kb", answering with the LLM at ``llm_url``."""
    options: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "collection": "kb",
        "llm_timeout": 5.0,
        "llm_deadline": 8.0,
        "llm_backoff": 0.05,
        **overrides,
    }
    if llm_url:
        options["llm_base_url"] = llm_url
    settings = Settings(**options)
    pipeline = RagPipeline.from_settings(settings, EdgeIndex(settings.data_dir), embedder=embedder)
    pipeline.ingest(DOCS, "kb")
    return pipeline


@contextmanager
def served(app: Any) -> Iterator[str]:
    """Run an ASGI app with uvicorn on a free port in a thread; yields its base URL."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
