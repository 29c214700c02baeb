"""Benchmark: the embedding backends (torch, onnx, onnx-int8, openvino-int8) on SciFact, ratios
against torch.

    .venv/bin/python bench/embedding_backends.py [--dataset ../shared/datasets/scifact]
        [--distractors 1000 | --full] [--backends torch,onnx,onnx-int8,openvino-int8]

For each backend, in one run (so every ratio compares figures measured side by side):

1. Ingest: a fresh Qdrant Edge data directory, the corpus through the real pipeline (chunk →
   embed → BM25 → index); chunks/s from the ingest report.
2. nDCG@10 of the test queries, hybrid search with the default settings, through the service's
   own retrieval (``eval.retrieval.run_queries``), on the index that backend built.
3. The switch: the same queries embedded by this backend against the index **torch** built: what
   an existing collection sees when ``embedding_backend`` changes (the rule: within 0.005).
4. Query embedding alone: ``embed_query`` on each test query (or the first ``--timing-queries``),
   one at a time, p50/p95 ms, with
   the runtime's default threads (one per core) and with 1 thread.
5. A reference ingest: torch at ``--reference-batch`` texts per forward pass (64, the default
   until small batches were measured faster on CPU), so ingest rates compare with what ingest
   did before both changes.

The corpus is every document judged for a test query plus ``--distractors`` others (the first
ones in corpus order), so a run takes minutes; ``--full`` uses all 5,183 documents (torch takes
~7 min to embed them on a 2-core box). Exports are made (once) before anything is timed. Run it
at normal priority under ``flock /tmp/grounded-timing.lock`` so no other timing run overlaps.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import harness  # noqa: E402
from eval.datasets import BeirDataset, load_beir  # noqa: E402
from eval.metrics import ranking_metrics  # noqa: E402
from eval.retrieval import run_queries  # noqa: E402
from ingest.embedding import BACKENDS, SentenceTransformerEmbedder, cached_export  # noqa: E402
from ingest.settings import Settings  # noqa: E402
from service.pipeline import RagPipeline  # noqa: E402

COLLECTION = "backends"


def subset(dataset: BeirDataset, distractors: int | None) -> BeirDataset:
    """Judged documents plus the first ``distractors`` unjudged ones; ``None`` = all."""
    if distractors is None:
        return dataset
    judged = {doc for rels in dataset.qrels.values() for doc in rels}
    extra = [d for d in dataset.corpus if d.id not in judged][:distractors]
    keep = {d.id for d in extra} | judged
    corpus = [d for d in dataset.corpus if d.id in keep]
    return BeirDataset(dataset.name, dataset.path, corpus, dataset.queries, dataset.qrels)


def ndcg(settings: Settings, dataset: BeirDataset) -> float:
    pipeline = RagPipeline.from_settings(settings)
    try:
        mode = f"{settings.search_mode}-{settings.fusion}"
        run, _ = run_queries(pipeline, dataset, COLLECTION, mode)
    finally:
        pipeline.close()
    return ranking_metrics(dataset.qrels, run)["ndcg@10"]


@contextmanager
def ingested(settings: Settings, dataset: BeirDataset) -> Iterator[tuple[RagPipeline, Any]]:
    """A pipeline of ``settings``, warmed up, after ingesting the corpus; and the ingest report."""
    pipeline = RagPipeline.from_settings(settings)
    try:
        pipeline.embedder.embed_documents(["warm-up"] * 64)
        yield pipeline, pipeline.ingest(dataset.corpus, COLLECTION)
    finally:
        pipeline.close()


def query_ms(embedder: SentenceTransformerEmbedder, queries: list[str]) -> tuple[float, float]:
    for text in queries[:20]:
        embedder.embed_query(text)
    times = []
    for text in queries:
        started = time.perf_counter()
        embedder.embed_query(text)
        times.append((time.perf_counter() - started) * 1000)
    return harness.percentile(times, 50), harness.percentile(times, 95)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset", type=Path, default=REPO.parent / "shared" / "datasets" / "scifact"
    )
    parser.add_argument("--distractors", type=int, default=1000)
    parser.add_argument("--full", action="store_true", help="the whole corpus")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument(
        "--timing-queries", type=int, default=300, help="queries timed for query-embedding ms"
    )
    parser.add_argument(
        "--reference-batch",
        type=int,
        default=64,
        help="also ingest with torch at this embedding batch size (the default before "
        "2026-11-27): every backend's ingest rate is reported against it too; 0 skips it",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    backends = args.backends.split(",")
    if backends[0] != "torch" or not set(backends) <= set(BACKENDS):
        raise SystemExit(f"--backends: a comma list of {', '.join(BACKENDS)} starting with torch")

    dataset = subset(load_beir(args.dataset), None if args.full else args.distractors)
    queries = list(dataset.queries.values())
    timed = queries[: args.timing_queries]
    work = Path(tempfile.mkdtemp(prefix="grounded-backends-"))
    print(
        f"machine: {harness.machine()}\ncorpus: {args.dataset.name}, {len(dataset.corpus)} "
        f"documents ({'all' if args.full else f'judged + {args.distractors} distractors'}), "
        f"{len(queries)} test queries"
    )
    for backend in backends[1:]:
        cached_export(Settings().embedding_model, backend)  # exports are not part of any timing

    rows: dict[str, dict[str, Any]] = {}
    for backend in backends:
        settings = Settings(
            data_dir=work / backend, collection=COLLECTION, embedding_backend=backend
        )
        with ingested(settings, dataset) as (pipeline, report):
            embedder = pipeline.embedder
            assert isinstance(embedder, SentenceTransformerEmbedder)
            p50, p95 = query_ms(embedder, timed)
        row: dict[str, Any] = {
            "chunks": report.chunks_written,
            "ingest_chunks_per_s": round(report.chunks_written / report.seconds, 1),
            "query_ms_p50": round(p50, 2),
            "query_ms_p95": round(p95, 2),
        }
        if backend != "torch":
            one = SentenceTransformerEmbedder(settings.embedding_model, backend=backend, threads=1)
            p50, p95 = query_ms(one, timed)
            row |= {"query_ms_p50_1thread": round(p50, 2), "query_ms_p95_1thread": round(p95, 2)}
        row["ndcg@10"] = round(ndcg(settings, dataset), 4)
        # The switch: this backend's queries against the index torch built.
        row["ndcg@10_on_torch_index"] = (
            row["ndcg@10"]
            if backend == "torch"
            else round(ndcg(settings.model_copy(update={"data_dir": work / "torch"}), dataset), 4)
        )
        rows[backend] = row
        print(f"{backend}: {row}", flush=True)

    reference: float | None = None
    if args.reference_batch:
        settings = Settings(
            data_dir=work / "reference",
            collection=COLLECTION,
            embedding_backend="torch",
            embedding_batch_size=args.reference_batch,
        )
        with ingested(settings, dataset) as (_, report):
            reference = report.chunks_written / report.seconds
        print(f"reference: torch at batch {args.reference_batch}: {reference:.1f} chunks/s")
        for row in rows.values():
            row["ingest_vs_reference"] = round(row["ingest_chunks_per_s"] / reference, 2)

    base = rows["torch"]
    print(
        f"\n{'backend':<14} {'nDCG@10':>8} {'Δ':>7} {'Δ torch idx':>11} {'q p50 ms':>9} "
        f"{'q p95 ms':>9} {'q p50 1t':>9} {'chunks/s':>9} {'× torch':>8} {'× ref':>6}"
    )
    for backend, row in rows.items():
        row["delta_ndcg"] = round(row["ndcg@10"] - base["ndcg@10"], 4)
        row["delta_ndcg_on_torch_index"] = round(row["ndcg@10_on_torch_index"] - base["ndcg@10"], 4)
        row["query_speedup"] = round(base["query_ms_p50"] / row["query_ms_p50"], 2)
        row["ingest_speedup"] = round(row["ingest_chunks_per_s"] / base["ingest_chunks_per_s"], 2)
        print(
            f"{backend:<14} {row['ndcg@10']:>8.4f} {row['delta_ndcg']:>+7.4f} "
            f"{row['delta_ndcg_on_torch_index']:>+11.4f} {row['query_ms_p50']:>9.2f} "
            f"{row['query_ms_p95']:>9.2f} {row.get('query_ms_p50_1thread', float('nan')):>9.2f} "
            f"{row['ingest_chunks_per_s']:>9.1f} {row['ingest_speedup']:>8.2f} "
            f"{row.get('ingest_vs_reference', float('nan')):>6.2f}"
        )
    keep = [
        b
        for b, r in rows.items()
        if abs(r["delta_ndcg"]) <= 0.005 and abs(r["delta_ndcg_on_torch_index"]) <= 0.005
    ]
    # grounded serve embeds each query on one thread; bulk ingest uses every core.
    query = min(keep, key=lambda b: rows[b].get("query_ms_p50_1thread", rows[b]["query_ms_p50"]))
    ingest = max(keep, key=lambda b: rows[b]["ingest_chunks_per_s"])
    print(
        "\nwithin 0.005 nDCG@10 of torch (own and torch's index): fastest query on one thread "
        f"(embedding_backend): {query}; most ingest chunks/s (ingest_embedding_backend): {ingest}"
    )

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"embedding_backends-{time.strftime('%Y%m%d-%H%M%S')}.json"
    result = {
        "machine": harness.machine(),
        "corpus_documents": len(dataset.corpus),
        "queries": len(queries),
        "backends": rows,
        "query_backend_within_0.005": query,
        "ingest_backend_within_0.005": ingest,
        "reference_batch": args.reference_batch or None,
        "reference_ingest_chunks_per_s": round(reference, 1) if reference else None,
    }
    path.write_text(json.dumps(result, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
