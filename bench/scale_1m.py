"""Benchmark: an embedded (Qdrant Edge) collection of 1,000,000 chunks, searched in-process.

    # 1. fill (long; niced is fine): real SciFact vectors + noise, real BM25 vectors
    nice -n 19 .venv/bin/python bench/scale_1m.py fill --store /tmp/scale --points 1000000 [--int8]
    # 2. time it (short; alone on the machine)
    flock /tmp/grounded-timing.lock .venv/bin/python bench/scale_1m.py search --store /tmp/scale

No 11-hour embedding run: ``fill`` embeds ``--base-chunks`` real SciFact chunks once with the
default model (cached under ``--cache``), then writes point ``i`` as base chunk ``i mod K``'s
dense vector plus Gaussian noise (``--noise`` per dimension), renormalised, with that chunk's real
BM25 vector and text. Payloads carry ``source`` (one of 100 parts, keyword-indexed) and
``chunk_index`` (0-3), so filtered searches select 1%, 3% and 50% of the points. The collection
is written inside :meth:`~ingest.index.VectorIndex.bulk_load` and its HNSW graph built once at the
end, with the ``--m`` / ``--ef-construct`` / ``--int8`` / ``--sparse-full-scan`` tuning
(:class:`~ingest.index.IndexTuning`).

``search`` reopens the store from disk (open time), then runs the SciFact test queries (their
dense and BM25 vectors computed once by ``fill``, so the figures are search only) through
:meth:`EdgeIndex.search` in hybrid mode (DBSF, the default fusion) without a filter and with
each filter, for each search-time tuning: the collection's default, a few ``hnsw_ef`` values
and, on an int8 collection, quantized search against its full vectors; and the BM25 leg alone
once per filter. It reports p50/p95 per case, dense recall@10 against exact search, resident
memory (RSS) and disk.

``ndcg`` measures what the same tunings do to SciFact nDCG@10 through the eval module
(:func:`eval.retrieval.evaluate_retrieval`, the figures of README): it copies the eval's SciFact
collection from ``--eval-store`` (``grounded eval retrieval --data-dir``) into stores created with
int8 and with a tiny graph (no re-embedding), and evaluates dense and hybrid (DBSF) on each, the
query vectors computed once (torch backend, as the collection was built)::

    nice -n 19 .venv/bin/python bench/scale_1m.py ndcg --store /tmp/n --eval-store eval-data/index
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import harness  # noqa: E402
from ingest.index import (  # noqa: E402
    EdgeIndex,
    FieldFilter,
    IndexPoint,
    IndexTuning,
    Manifest,
    SearchQuery,
)
from ingest.index.base import Mode  # noqa: E402
from ingest.settings import IndexTuningSettings, RetrievalSettings  # noqa: E402
from ingest.sparse import Bm25Encoder, Bm25Params, SparseVec, measure_avg_len  # noqa: E402

COLLECTION = "scale"
SOURCES = 100  # payload ``source`` values: a filter on one selects 1% of the points
CHUNKS_PER_DOC = 4  # ``chunk_index`` 0-3: ``chunk_index <= 1`` selects 50%
BATCH = 2048
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "grounded-bench"
FILTERS: dict[str, tuple[FieldFilter, ...]] = {
    "none": (),
    "source (1%)": (FieldFilter("source", value="/corpus/part-07.jsonl"),),
    "source (3%)": (
        FieldFilter("source", any=tuple(f"/corpus/part-{i:02d}.jsonl" for i in (7, 8, 9))),
    ),
    "chunk_index<=1 (50%)": (FieldFilter("chunk_index", lte=1),),
}


# base vectors: real SciFact chunks and queries, embedded once ----------------------------
def base_vectors(dataset: Path, chunks: int, cache: Path) -> dict[str, Any]:
    """K real chunks (dense, BM25, text) and the test queries (dense, BM25), cached."""
    path = cache / f"scifact-base-{chunks}.npz"
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        arrays = np.load(path)
        meta = json.loads(meta_path.read_text())
        return {"dense": arrays["dense"], "queries_dense": arrays["queries_dense"], **meta}
    from eval.datasets import load_beir
    from ingest.build import build_chunker, build_embedder
    from ingest.settings import Settings

    settings = Settings()
    embedder = build_embedder(settings)
    chunker = build_chunker(settings, embedder)
    data = load_beir(dataset)
    texts: list[str] = []
    for doc in data.corpus:
        texts += [c.embed_text for c in chunker.chunk(doc)]
        if len(texts) >= chunks:
            break
    texts = texts[:chunks]
    started = time.perf_counter()
    dense = embedder.embed_documents(texts)
    print(f"embedded {len(texts)} base chunks in {time.perf_counter() - started:.0f} s")
    bm25 = Bm25Params(avg_len=measure_avg_len(texts))
    encoder = Bm25Encoder(bm25)
    queries = list(data.queries.values())
    meta = {
        "texts": texts,
        "bm25": bm25.as_dict(),
        "model": embedder.name,
        "sparse": [asdict(encoder.embed_document(t)) for t in texts],
        "queries_sparse": [asdict(encoder.embed_query(q)) for q in queries],
    }
    queries_dense = np.stack([embedder.embed_query(q) for q in queries])
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, dense=dense, queries_dense=queries_dense)
    meta_path.write_text(json.dumps(meta))
    return {"dense": dense, "queries_dense": queries_dense, **meta}


def synthetic_batch(
    base: dict[str, Any], start: int, stop: int, noise: float, rng: np.random.Generator
) -> list[IndexPoint]:
    """Points ``start..stop``: base chunk ``i mod K`` plus noise, renormalised."""
    k = len(base["texts"])
    rows = np.arange(start, stop) % k
    dense = base["dense"][rows] + rng.normal(0, noise, (len(rows), base["dense"].shape[1]))
    dense = (dense / np.linalg.norm(dense, axis=1, keepdims=True)).astype(np.float32)
    points = []
    for i, row, vec in zip(range(start, stop), rows, dense, strict=True):
        sparse = base["sparse"][row]
        doc = i // CHUNKS_PER_DOC
        points.append(
            IndexPoint(
                str(uuid.UUID(int=i + 1)),
                vec,
                SparseVec(sparse["indices"], sparse["values"]),
                {
                    "tenant": "default",
                    "doc_id": f"doc-{doc}",
                    "chunk_index": i % CHUNKS_PER_DOC,
                    "chunk_count": CHUNKS_PER_DOC,
                    "doc_hash": f"h{doc}",
                    "source": f"/corpus/part-{doc % SOURCES:02d}.jsonl",
                    "text": base["texts"][row],
                },
            )
        )
    return points


def du(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def rss_mb() -> float:
    """This process's resident memory (Linux ``/proc``), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# fill ---------------------------------------------------------------------------------------
def fill(args: argparse.Namespace) -> None:
    base = base_vectors(args.dataset, args.base_chunks, args.cache)
    if args.store.exists():
        shutil.rmtree(args.store)
    tuning = IndexTuning(
        m=args.m,
        ef_construct=args.ef_construct,
        quantization="int8" if args.int8 else "none",
        sparse_full_scan=args.sparse_full_scan,
    )
    index = EdgeIndex(args.store, tuning)
    manifest = Manifest(base["model"], base["dense"].shape[1], Bm25Params(**base["bm25"]), "bench")
    index.create_collection(COLLECTION, manifest)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    with index.bulk_load(COLLECTION):
        for start in range(0, args.points, BATCH):
            index.upsert(
                COLLECTION,
                synthetic_batch(base, start, min(start + BATCH, args.points), args.noise, rng),
            )
            if (start // BATCH) % 50 == 0:
                done = min(start + BATCH, args.points)
                rate = done / (time.perf_counter() - started)
                print(f"  {done} points, {rate:.0f} points/s", flush=True)
    written = time.perf_counter() - started
    index.flush(COLLECTION)  # builds the HNSW graph (and the int8 copy)
    built = time.perf_counter() - started - written
    count = index.count(COLLECTION)
    index.close()
    result = {
        "machine": harness.machine(),
        "points": count,
        "base_chunks": len(base["texts"]),
        "noise": args.noise,
        "tuning": asdict(tuning),
        "write_s": round(written, 1),
        "index_build_s": round(built, 1),
        "fill_s": round(written + built, 1),
        "disk_mb": round(du(args.store) / 2**20, 1),
    }
    (args.store / "bench-fill.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


# search -------------------------------------------------------------------------------------
def search_cases(int8: bool, efs: list[int]) -> dict[str, IndexTuning]:
    """Search-time tunings to compare on one store; its creation-time tuning is fixed."""
    cases = {"default": IndexTuning(ignore_quantization=int8)}
    for ef in efs:
        cases[f"hnsw_ef={ef}"] = IndexTuning(hnsw_ef=ef, ignore_quantization=int8)
    if int8:
        # Unset rescore: Qdrant decides, and Edge then does not re-score (measured).
        cases["int8"] = IndexTuning(quantization="int8")
        cases["int8 rescore"] = IndexTuning(quantization="int8", rescore=True)
        cases["int8 rescore x2"] = IndexTuning(quantization="int8", rescore=True, oversampling=2)
    return cases


def search(args: argparse.Namespace) -> None:
    base = base_vectors(args.dataset, args.base_chunks, args.cache)
    fill_info = json.loads((args.store / "bench-fill.json").read_text())
    int8 = fill_info["tuning"]["quantization"] == "int8"
    rss_before = rss_mb()
    started = time.perf_counter()
    index = EdgeIndex(args.store)
    points = index.count(COLLECTION)  # loads the shard from disk
    open_s = time.perf_counter() - started
    rss_open = rss_mb()
    qd = base["queries_dense"][: args.queries]
    qs = [SparseVec(q["indices"], q["values"]) for q in base["queries_sparse"][: args.queries]]
    print(
        f"machine: {harness.machine()}\n{points} points, disk {fill_info['disk_mb']} MB, "
        f"open {open_s * 1000:.0f} ms, RSS {rss_before:.0f} -> {rss_open:.0f} MB, "
        f"{len(qs)} queries"
    )

    def run(
        tuning: IndexTuning, filters: tuple[FieldFilter, ...], mode: Mode = "hybrid"
    ) -> list[float]:
        index.tuning = tuning
        times = []
        for dense, sparse in list(zip(qd, qs, strict=True)) * args.repeat:
            query = SearchQuery(
                dense, sparse, mode, "dbsf", filters=filters, prefetch_limit=args.prefetch
            )
            t = time.perf_counter()
            index.search(COLLECTION, query)
            times.append((time.perf_counter() - t) * 1000)
        return times

    # Exact dense top 10 once: the recall@10 reference of every case.
    sample = list(range(0, len(qd), max(1, len(qd) // args.recall_queries)))[: args.recall_queries]
    index.tuning = IndexTuning(ignore_quantization=int8)
    exact = [
        {h.id for h in index.search(COLLECTION, SearchQuery(qd[i], None, "dense", exact=True))}
        for i in sample
    ]
    run(IndexTuning(ignore_quantization=int8), ())  # warm-up: pages the graph and vectors in
    rows: list[dict[str, Any]] = []
    for name, tuning in search_cases(int8, args.ef).items():
        index.tuning = tuning
        found = [
            {h.id for h in index.search(COLLECTION, SearchQuery(qd[i], None, "dense"))}
            for i in sample
        ]
        recall = float(np.mean([len(f & e) / 10 for f, e in zip(found, exact, strict=True)]))
        dense_times = run(tuning, (), "dense")
        row: dict[str, Any] = {
            "case": name,
            "dense_recall@10": round(recall, 3),
            "dense_p95_ms": round(harness.percentile(dense_times, 95), 2),
        }
        for label, filters in FILTERS.items():
            times = run(tuning, filters)
            row[f"hybrid {label}"] = {
                "p50_ms": round(harness.percentile(times, 50), 2),
                "p95_ms": round(harness.percentile(times, 95), 2),
            }
        if not rows:  # the BM25 leg alone, once: no search-time tuning touches it
            for label, filters in FILTERS.items():
                times = run(tuning, filters, "sparse")
                row[f"sparse {label}"] = {
                    "p50_ms": round(harness.percentile(times, 50), 2),
                    "p95_ms": round(harness.percentile(times, 95), 2),
                }
        rows.append(row)
        print(json.dumps(row), flush=True)
    rss_end = rss_mb()
    index.close()
    result = {
        "machine": harness.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "fill": fill_info,
        "open_ms": round(open_s * 1000, 1),
        "rss_mb": {"before_open": round(rss_before), "after_open": round(rss_open)},
        "rss_after_queries_mb": round(rss_end),
        "queries": len(qs),
        "repeat": args.repeat,
        "cases": rows,
    }
    print(f"\nRSS after the queries: {rss_end:.0f} MB; goal: hybrid p95 <= 20 ms at 1M")
    print(f"{'case':<22} {'recall':>7} " + " ".join(f"{k[:18]:>20}" for k in FILTERS))
    for row in rows:
        cells = " ".join(
            f"{row[f'hybrid {k}']['p50_ms']:>8.1f} /{row[f'hybrid {k}']['p95_ms']:>8.1f}ms"
            for k in FILTERS
        )
        print(f"{row['case']:<22} {row['dense_recall@10']:>7.3f} {cells}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"scale-{points}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"written: {path}")


# ndcg ---------------------------------------------------------------------------------------
class CachedQueries:
    """An embedder whose ``embed_query`` answers from vectors computed beforehand, so each case
    costs only its searches (the real embedder's other attributes pass through)."""

    def __init__(self, embedder: Any, vectors: dict[str, np.ndarray]) -> None:
        self._embedder = embedder
        self._vectors = vectors

    def __getattr__(self, name: str) -> Any:
        return getattr(self._embedder, name)

    def embed_query(self, text: str) -> np.ndarray:
        return self._vectors[text]


def copy_collection(source: EdgeIndex, target: EdgeIndex, collection: str) -> None:
    manifest = source.manifest(collection)
    assert manifest is not None
    target.create_collection(collection, manifest)
    offset: str | None = None
    while True:
        points, offset = source.scroll_points(collection, offset, 1024)
        target.upsert(collection, points)
        if offset is None:
            break
    target.flush(collection)


def ndcg(args: argparse.Namespace) -> None:
    from eval.datasets import load_beir
    from eval.retrieval import collection_for, evaluate_retrieval
    from ingest.build import build_embedder
    from ingest.settings import Settings
    from service.pipeline import RagPipeline

    settings = Settings(data_dir=args.store, embedding_backend="torch")
    embedder = build_embedder(settings)
    dataset = load_beir(args.dataset)
    source = EdgeIndex(args.eval_store)
    collection = collection_for(
        dataset.name, dataset.path, RagPipeline.from_settings(settings, source, embedder=embedder)
    )
    if source.manifest(collection) is None:
        raise SystemExit(f"{args.eval_store} holds no {collection}: run grounded eval first")
    texts = list(dataset.queries.values())
    cached = CachedQueries(embedder, dict(zip(texts, embedder.embed_documents(texts), strict=True)))
    stores = {"default": IndexTuning(), "int8": IndexTuning(quantization="int8")}
    stores["m=4 ef_construct=8"] = IndexTuning(m=4, ef_construct=8)
    cases = [
        ("default", "default", IndexTuning()),
        ("hnsw_ef=16", "default", IndexTuning(hnsw_ef=16)),
        ("int8", "int8", IndexTuning()),
        ("int8 rescore", "int8", IndexTuning(rescore=True)),
        ("m=4 ef_construct=8 (ef 8)", "m=4 ef_construct=8", IndexTuning()),
    ]
    if args.store.exists():
        shutil.rmtree(args.store)
    opened: dict[str, EdgeIndex] = {}
    for name, tuning in stores.items():
        opened[name] = EdgeIndex(args.store / name.replace(" ", "_"), tuning)
        copy_collection(source, opened[name], collection)
    source.close()
    rows = {}
    for label, store, tuning in cases:
        index = opened[store]
        index.tuning = tuning
        pipeline = RagPipeline.from_settings(settings, index, embedder=cached)
        report = evaluate_retrieval(pipeline, dataset, ["dense", "hybrid-dbsf"], collection)
        rows[label] = {mode: round(report[mode]["ndcg@10"], 4) for mode in report}
        print(label, rows[label], flush=True)
    for index in opened.values():
        index.close()
    shutil.rmtree(args.store)
    result = {"machine": harness.machine(), "collection": collection, "ndcg@10": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"scale-ndcg-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"written: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("phase", choices=["fill", "search", "ndcg"])
    parser.add_argument("--store", type=Path, required=True, help="data dir of the bench store")
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--base-chunks", type=int, default=2000, help="real chunks embedded")
    parser.add_argument("--noise", type=float, default=0.02, help="Gaussian sigma per dimension")
    parser.add_argument("--m", type=int, default=None, help="HNSW m (unset = 16)")
    parser.add_argument("--ef-construct", type=int, default=None, help="unset = 100")
    parser.add_argument("--int8", action="store_true", help="build an int8 copy of the vectors")
    parser.add_argument(
        "--sparse-full-scan",
        type=int,
        default=IndexTuningSettings.model_fields["sparse_full_scan_threshold"].default,
        help="BM25 full-scan threshold in points (default: grounded's; Qdrant's own is 5,000)",
    )
    parser.add_argument(
        "--prefetch",
        type=int,
        default=RetrievalSettings.model_fields["prefetch_limit"].default,
        help="candidates per hybrid leg (default: grounded's)",
    )
    parser.add_argument("--queries", type=int, default=300, help="SciFact test queries timed")
    parser.add_argument("--recall-queries", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=2, help="passes over the queries per case")
    parser.add_argument("--ef", type=int, nargs="*", default=[32, 64, 256], help="hnsw_ef cases")
    parser.add_argument(
        "--dataset", type=Path, default=REPO.parent / "shared" / "datasets" / "scifact"
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--eval-store", type=Path, help="ndcg: data dir of the eval's index")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    if args.points <= 0:
        parser.error("--points must be > 0")
    random.seed(0)
    {"fill": fill, "search": search, "ndcg": ndcg}[args.phase](args)


if __name__ == "__main__":
    main()
