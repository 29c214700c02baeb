"""Benchmark: upserts into a Qdrant Edge shard beside a thread busy in Python, against the same
upserts alone, measured in the same run.

    .venv/bin/python bench/edge_writes.py                 # 8,192 points, switch 100 µs
    .venv/bin/python bench/edge_writes.py --points 2048 --switch-us 100 --switch-us 1000

Points carry grounded's real payload (:func:`~ingest.payload.chunk_payload` of SciFact chunks),
random unit dense vectors and real BM25 vectors, written in batches from one thread, as the
ingest pipeline's writer thread writes them:

a. **alone**: nothing else runs (the baseline);
b. **busy**: another thread runs Python the whole time (as a request thread, a tokenizer or a
   DataLoader's consumer does), at Python's default switch interval (5 ms);
c. **busy, switch N µs**: the same with ``sys.setswitchinterval`` at N µs (``--switch-us``).
d. **process**: the same writes through :class:`~ingest.index.process.ProcessIndex` (the shard
   served from a process of its own, as ``grounded ingest`` writes on a GPU), alone and beside
   the busy thread: the points are pickled here and built in the child.

Also measured: building the ``qdrant_edge.Point`` objects alone, with grounded's payloads and with
the same keys valued ``None`` (``build_*`` figures, no writes).

Why (b) starves: qdrant_edge converts a point's id, vectors and payload values with PyO3 enums
that try one variant after another, and each failed try normalises a Python exception under a
``std::sync::Once`` that PyO3 (0.23+) waits on with the GIL released. A point with grounded's
payload gives up the GIL ~94 times (8 for the named vectors, ~86 for the payload: a string value
10, an int 4, a list 14 plus 4 per int in it, a dict 18; ``None`` and booleans 0; counted with
gdb, a breakpoint on ``PyEval_SaveThread``; ~154 before the payload left out empty ``headings``
and ``metadata`` and stored sentence starts as one string, 2026-11-28), and beside a thread busy
in Python each release may wait for that thread's switch interval. On the 2-core development
machine (2026-11-27, three runs) (b) wrote 100-190× slower than (a), 48-61 against 6,200-9,000
points/s, and (c) at 100 µs 1,200-1,550 points/s; even alone, building the points with their
payloads ran 4.5× slower than with the same keys valued ``None`` (20,079 against 89,618
points/s). See docs/scaling.md, "GPU ingestion".
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import harness  # noqa: E402
from eval.datasets import load_beir  # noqa: E402
from ingest.build import bm25_params, build_chunker, build_embedder  # noqa: E402
from ingest.index.base import IndexPoint, Manifest  # noqa: E402
from ingest.index.edge import _EDGE  # noqa: E402  (the vectors exactly as EdgeIndex writes them)
from ingest.payload import chunk_payload  # noqa: E402
from ingest.settings import Settings  # noqa: E402
from ingest.sparse import Bm25Encoder  # noqa: E402

BATCH = 256  # points per upsert: the pipeline writes a batch of documents' chunks at once


def make_points(dataset: Path, count: int) -> list[IndexPoint]:
    """``count`` points of SciFact chunks (cycled), payloads as ingest writes them."""
    settings = Settings()
    chunker = build_chunker(settings, build_embedder(settings))
    bm25 = Bm25Encoder(bm25_params(settings))
    chunks = []
    for doc in load_beir(dataset).corpus:
        chunks.extend(chunker.chunk(doc))
        if len(chunks) >= min(count, 4096):
            break
    rng = np.random.default_rng(14)
    points = []
    for i in range(count):
        chunk = chunks[i % len(chunks)]
        dense = rng.standard_normal(384).astype(np.float32)
        points.append(
            IndexPoint(
                str(uuid.UUID(int=i + 1)),
                dense / np.linalg.norm(dense),
                bm25.embed_document(chunk.embed_text),
                chunk_payload(chunk, doc_hash="0" * 64, chunk_count=1),
            )
        )
    return points


@contextmanager
def busy_thread() -> Iterator[None]:
    """Another thread running Python bytecode until the block ends."""
    stop = threading.Event()

    def spin() -> None:
        total = 0
        while not stop.is_set():
            total += sum(range(64))

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def write_rate(points: list[IndexPoint], folder: Path, process: bool = False) -> float:
    """Points per second upserted into a new Edge collection, in batches of :data:`BATCH`;
    ``process``: through a :class:`ProcessIndex` (started before the clock)."""
    index = harness.edge_index(folder, process)
    settings = Settings()
    index.create_collection("w", Manifest("bench", 384, bm25_params(settings), "bench"))
    started = time.perf_counter()
    for i in range(0, len(points), BATCH):
        index.upsert("w", points[i : i + BATCH])
    seconds = time.perf_counter() - started
    assert index.count("w") == len(points)
    index.close()
    return len(points) / seconds


def build_rate(points: list[IndexPoint], payloads: list[dict[str, Any]]) -> float:
    """``qdrant_edge.Point`` objects built per second with these payloads, vectors as written."""
    vectors = [_EDGE.vectors(p) for p in points]
    started = time.perf_counter()
    for point, vector, payload in zip(points, vectors, payloads, strict=True):
        qe.Point(point.id, vector, payload)
    return len(points) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=8192)
    parser.add_argument(
        "--switch-us", type=int, action="append", help="switch intervals to try (default 100)"
    )
    parser.add_argument(
        "--dataset", type=Path, default=REPO.parent / "shared" / "datasets" / "scifact"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    switches = args.switch_us or [100]
    if args.points <= 0 or min(switches) <= 0:
        parser.error("--points and --switch-us must be > 0")
    points = make_points(args.dataset, args.points)
    print(f"machine: {harness.machine()}\n{len(points)} points, batches of {BATCH}")
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="grounded-writes-") as work:
        rates["a_alone"] = write_rate(points, Path(work) / "a")
        with busy_thread():
            rates["b_busy"] = write_rate(points, Path(work) / "b")
        for us in switches:
            with busy_thread(), harness.switch_interval(us / 1e6):
                rates[f"c_busy_switch_{us}us"] = write_rate(points, Path(work) / f"c{us}")
        rates["d_process_alone"] = write_rate(points, Path(work) / "da", process=True)
        with busy_thread():
            rates["d_process_busy"] = write_rate(points, Path(work) / "db", process=True)
    payloads = [p.payload for p in points]
    builds = {
        "build_payload": build_rate(points, payloads),
        "build_payload_keys_none": build_rate(points, [dict.fromkeys(p) for p in payloads]),
    }
    for name, rate in builds.items():
        print(f"{name}: {rate:,.0f} points/s built, not written")
    base = rates["a_alone"]
    for name, rate in rates.items():
        print(f"{name}: {rate:,.0f} points/s ({rate / base:.3f} of alone)")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"edge_writes-{time.strftime('%Y%m%d-%H%M%S')}.json"
    result = {
        "machine": harness.machine(),
        "points": len(points),
        "batch": BATCH,
        "points_per_s": rates,
        "ratios_to_alone": {k: round(v / base, 4) for k, v in rates.items()},
        "points_built_per_s": builds,
    }
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
