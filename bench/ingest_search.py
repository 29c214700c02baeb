"""Benchmark: ingest throughput vs the raw encoder, and /v1/search latency over HTTP.

    .venv/bin/python bench/ingest_search.py [--dataset ../shared/datasets/scifact] [--limit N]

1. Ingests the BEIR corpus through the real pipeline (load → chunk → embed → BM25 → Qdrant Edge)
   and reports docs/s and chunks/s.
2. On the same chunks, in the same run, times sentence-transformers ``encode`` alone: the
   pipeline's overhead shows as the ratio pipeline chunks/s ÷ raw encoder chunks/s.
3. Starts ``grounded serve`` on that data and sends the test queries one at a time (one client)
   to ``POST /v1/search`` for each mode: p50/p95 latency, and the share of queries with a relevant
   document in the top 10.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import harness  # noqa: E402
from eval.datasets import load_beir  # noqa: E402
from ingest.build import build_chunker, build_embedder, build_ingestor  # noqa: E402
from ingest.index import EdgeIndex  # noqa: E402
from ingest.settings import Settings  # noqa: E402

MODES = [
    ("hybrid-rrf", {"mode": "hybrid", "fusion": "rrf"}),
    ("hybrid-dbsf", {"mode": "hybrid", "fusion": "dbsf"}),
    ("dense", {"mode": "dense"}),
    ("sparse", {"mode": "sparse"}),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset", type=Path, default=REPO.parent / "shared" / "datasets" / "scifact"
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N documents")
    parser.add_argument("--queries", type=int, default=None, help="only the first N test queries")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="grounded-bench-"))
    data_dir = work / "data"
    settings = Settings(data_dir=data_dir, collection="bench")
    dataset = load_beir(args.dataset).limited(args.queries)
    docs = dataset.corpus[: args.limit] if args.limit else dataset.corpus
    print(f"machine: {harness.machine()}\ncorpus: {args.dataset.name}, {len(docs)} documents")

    embedder = build_embedder(settings)
    embedder.embed_documents(["warm-up"] * 64)

    # 1. the pipeline
    index = EdgeIndex(data_dir)
    ingestor = build_ingestor(settings, index, embedder, "bench")
    report = ingestor.ingest(docs)
    points = index.count("bench")
    index.close()
    pipe_docs = report.documents / report.seconds
    pipe_chunks = report.chunks_written / report.seconds

    # 2. the raw encoder on the very same chunk texts
    chunker = build_chunker(settings, embedder)
    texts = [c.embed_text for d in docs for c in chunker.chunk(d)]
    started = time.perf_counter()
    embedder.embed_documents(texts)
    raw_seconds = time.perf_counter() - started
    raw_chunks = len(texts) / raw_seconds
    print(
        f"ingest: {report.documents} docs, {report.chunks_written} chunks ({points} points) in "
        f"{report.seconds:.1f} s = {pipe_docs:.1f} docs/s, {pipe_chunks:.1f} chunks/s\n"
        f"raw encoder on the same {len(texts)} chunks: {raw_seconds:.1f} s = "
        f"{raw_chunks:.1f} chunks/s\n"
        f"pipeline / raw encoder = {pipe_chunks / raw_chunks:.3f} (target >= 0.90)"
    )

    # 3. the HTTP API
    port, log = harness.free_port(), work / "server.log"
    server = harness.start_server(data_dir, "bench", port, log)
    latency: dict[str, dict[str, float]] = {}
    try:
        with httpx.Client(base_url=f"http://{harness.HOST}:{port}", timeout=30) as client:
            harness.wait_ready(client, server, log)
            for _ in range(20):
                client.post("/v1/search", json={"query": "warm up the service", "top_k": 10})
            for name, extra in MODES:
                times, hits = [], 0
                for qid, query in dataset.queries.items():
                    t = time.perf_counter()
                    response = client.post(
                        "/v1/search", json={"query": query, "top_k": 10, **extra}
                    )
                    times.append((time.perf_counter() - t) * 1000)
                    response.raise_for_status()
                    found = {r["doc_id"] for r in response.json()["results"]}
                    hits += bool(found & dataset.qrels[qid].keys())
                latency[name] = {
                    "p50_ms": round(statistics.median(times), 2),
                    "p95_ms": round(harness.percentile(times, 95), 2),
                    "hit@10": round(hits / len(dataset.queries), 3),
                }
    finally:
        harness.stop_server(server)

    print(f"\n/v1/search over HTTP, one client, {len(dataset.queries)} test queries:")
    print(f"{'mode':<12} {'p50 ms':>8} {'p95 ms':>8} {'hit@10':>8}")
    for name, row in latency.items():
        print(f"{name:<12} {row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} {row['hit@10']:>8.3f}")
    print("target: hybrid p95 <= 25 ms")

    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": harness.machine(),
        "corpus": args.dataset.name,
        "documents": report.documents,
        "chunks": report.chunks_written,
        "pipeline_docs_per_s": round(pipe_docs, 2),
        "pipeline_chunks_per_s": round(pipe_chunks, 2),
        "raw_encoder_chunks_per_s": round(raw_chunks, 2),
        "pipeline_over_raw": round(pipe_chunks / raw_chunks, 3),
        "search": latency,
    }
    path = args.out / f"ingest_search-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
