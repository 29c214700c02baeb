"""Benchmark: the ingest pipeline around the model, in chunks/s: chunking, re-ingest checks,
BM25, payloads and writes, with an embedder that costs nothing (random unit vectors). That is
the most any embedder, a GPU's included, can get out of the pipeline on this machine: if it
falls short of 70% of a GPU's model-only ceiling (``bench/gpu_ingest.py`` (a): 14,421
chunks/s on an H100), no GPU path meets issue #11's goal on that CPU.

    .venv/bin/python bench/ingest_no_model.py                    # 12,000 SciFact documents
    .venv/bin/python bench/ingest_no_model.py --docs 200 --feed-us 0 --chunk-workers 2

Each configuration ingests the same documents into a new embedded collection:

- **writes**: in this process (a writer thread, as on CPU) or from a process of their own
  (:class:`~ingest.index.process.ProcessIndex`, as ``grounded ingest`` writes on a GPU);
- **chunk workers**: 0 (chunked in this process) or ``--chunk-workers`` processes;
- **feed**: the embedder returns at once, or first runs Python for ``--feed-us`` µs per chunk
  (default 69, the H100 ceiling's time per chunk): a stand-in for the thread that feeds a GPU,
  which keeps the GIL busy for as long as the model runs.

It prints chunks/s of each until the final flush, and its ratio to the first (writes in this
process, no chunk workers, no feed): the baseline, measured in the same run; then the seconds
the final flush took to build the HNSW graph (the engine's, on its own cores), and this
process's CPU time per chunk: with cores to spare for the children, 1e6 / it bounds chunks/s.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import harness  # noqa: E402
from eval.datasets import load_beir  # noqa: E402
from ingest.build import build_embedder, build_ingestor  # noqa: E402
from ingest.settings import Settings  # noqa: E402


class NoModel:
    """An :class:`~ingest.embedding.Embedder` with the real model's tokenizer and window (the
    chunker needs them) whose vectors are random unit vectors, after ``feed_us`` µs of Python
    per text."""

    def __init__(self, real: Any, feed_us: float) -> None:
        self.name = real.name
        self.dimension = real.dimension
        self.max_tokens = real.max_tokens
        self.tokenizer = real.tokenizer
        self.feed_us = feed_us
        self.feed_cpu = 0.0  # CPU seconds the feed spent: not the pipeline's
        self._rng = np.random.default_rng(11)

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        deadline = time.perf_counter() + self.feed_us * len(texts) / 1e6
        cpu = time.thread_time()
        while time.perf_counter() < deadline:
            sum(range(64))  # Python bytecode: holds the GIL but for the switch interval
        self.feed_cpu += time.thread_time() - cpu
        vectors = self._rng.standard_normal((len(texts), self.dimension)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


class Stopwatch:
    """``fn``, timed: the final flush builds the HNSW graph, an engine cost apart from the
    pipeline's (reported on its own)."""

    def __init__(self, fn: Callable[[str], None]) -> None:
        self.fn = fn
        self.seconds = 0.0
        self.cpu_before: float | None = None  # this process's CPU time when it was first called

    def __call__(self, collection: str) -> None:
        if self.cpu_before is None:
            self.cpu_before = time.process_time()
        started = time.perf_counter()
        self.fn(collection)
        self.seconds += time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--docs", type=int, default=12_000, help="SciFact documents to ingest (cycled)"
    )
    parser.add_argument("--chunk-workers", type=int, default=2)
    parser.add_argument("--feed-us", type=float, default=69.0, help="0 leaves the feed out")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="whose tokenizer chunks")
    parser.add_argument(
        "--dataset", type=Path, default=REPO.parent / "shared" / "datasets" / "scifact"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    if args.docs <= 0 or args.chunk_workers <= 0 or args.feed_us < 0:
        parser.error("--docs and --chunk-workers must be > 0, --feed-us >= 0")
    corpus = load_beir(args.dataset).corpus
    # Copies past the corpus's end get new ids, so each is written again.
    docs = [
        (doc if i < len(corpus) else replace(doc, id=f"{doc.id}~{i // len(corpus)}"))
        for i, doc in zip(range(args.docs), itertools.cycle(corpus))
    ]
    # Only its tokenizer and window are used: on CPU, whatever the machine has.
    real = build_embedder(
        Settings(embedding_model=args.model, embedding_device="cpu", embedding_backend="torch")
    )
    feeds = [0.0, args.feed_us] if args.feed_us else [0.0]
    print(f"machine: {harness.machine()}\n{len(docs)} documents of {args.dataset.name}")
    rates: dict[str, float] = {}
    parent_us: dict[str, float] = {}
    graph_s: dict[str, float] = {}
    chunks = 0
    with tempfile.TemporaryDirectory(prefix="grounded-nomodel-") as work:
        for n, (feed, process, workers) in enumerate(
            itertools.product(feeds, (False, True), (0, args.chunk_workers))
        ):
            name = (
                f"writes_{'process' if process else 'in_process'}"
                f"_chunk_workers_{workers}_feed_{feed:g}us"
            )
            folder = Path(work) / str(n)
            index = harness.edge_index(folder, process)
            settings = Settings(data_dir=folder, ingest_chunk_workers=workers)
            graph = Stopwatch(index.flush)
            index.flush = graph  # type: ignore[method-assign]
            cpu = time.process_time()
            embedder = NoModel(real, feed)
            report = build_ingestor(settings, index, embedder, "nm").ingest(docs)
            chunks = report.chunks_written
            # This process's CPU (every thread, no child) per chunk, less the feed's spinning:
            # on a machine with cores to spare for the children, 1e6 / it bounds chunks/s.
            cpu_used = (graph.cpu_before or time.process_time()) - cpu  # the graph left out
            parent_us[name] = (cpu_used - embedder.feed_cpu) * 1e6 / max(chunks, 1)
            index.close()
            graph_s[name] = graph.seconds
            rates[name] = chunks / (report.seconds - graph.seconds)
            base = next(iter(rates.values()))
            print(
                f"{name}: {chunks} chunks in {report.seconds - graph.seconds:.2f} s "
                f"= {rates[name]:,.0f}/s ({rates[name] / base:.2f} of the first), then "
                f"{graph.seconds:.2f} s building the graph; this process "
                f"{parent_us[name]:.0f} µs CPU per chunk",
                flush=True,
            )
    base = next(iter(rates.values()))
    result = {
        "machine": harness.machine(),
        "documents": len(docs),
        "chunks": chunks,
        "chunks_per_s": {k: round(v, 1) for k, v in rates.items()},
        "ratios_to_first": {k: round(v / base, 3) for k, v in rates.items()},
        "this_process_cpu_us_per_chunk": {k: round(v, 1) for k, v in parent_us.items()},
        "graph_build_s": {k: round(v, 2) for k, v in graph_s.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"ingest_no_model-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
