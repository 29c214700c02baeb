"""Benchmark: the extractive answer's cost, sentences split at query time vs stored at ingest.

    .venv/bin/python bench/extractive.py [--dataset ../shared/datasets/scifact] [--queries 100]

1. Ingests the documents judged for the first ``--queries`` test questions plus the first
   ``--docs`` documents of the corpus (distractors) through the real pipeline into a temporary
   Qdrant Edge store.
2. Retrieves the top chunks of every question once (hybrid, the defaults) and times only
   ``ExtractiveGenerator.generate`` on them, in three ways, in the same run, on the same chunks:

   - **old**: what grounded did before sentence offsets were stored: every chunk split into
     sentences at query time and every sentence embedded (the generator's path for chunks written
     before offsets existed, with no cap on the candidates);
   - **stored, all embedded**: stored offsets, no split, but still every sentence embedded;
     the difference to *old* is what splitting costs, the rest is embedding;
   - **new**: stored offsets and the default cap on the candidate sentences embedded.

   Also printed: how often the new answer keeps the best sentence of the uncapped ranking, the
   answers' overlap (Jaccard of their sentences), and the share of answers quoting a judged
   relevant document, for the uncapped and the capped way.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import harness  # noqa: E402
from eval.datasets import load_beir  # noqa: E402
from ingest.build import build_embedder, build_ingestor  # noqa: E402
from ingest.index import EdgeIndex  # noqa: E402
from ingest.settings import Settings  # noqa: E402
from service.generation import Answer, ExtractiveGenerator  # noqa: E402
from service.retrieval import HybridRetriever, RetrievalResult, SearchParams  # noqa: E402

TARGET_MS = 50.0


def quoted(answer: Answer) -> set[tuple[int, str]]:
    """The answer's sentences as (chunk rank, text)."""
    found = re.findall(r"(.+?) \[(\d+)\](?: |$)", answer.text, flags=re.DOTALL)
    return {(int(number), text) for text, number in found}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset", type=Path, default=REPO.parent / "shared" / "datasets" / "scifact"
    )
    parser.add_argument("--queries", type=int, default=100, help="the first N test questions")
    parser.add_argument("--docs", type=int, default=400, help="distractor documents")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's own choice, one per core); with other "
        "work on a 2-core machine, 2 threads wait on each other and small encodes slow down "
        "many times over, while 1 thread does not",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    dataset = load_beir(args.dataset).limited(args.queries)
    judged = {doc for rels in dataset.qrels.values() for doc in rels}
    docs = [d for i, d in enumerate(dataset.corpus) if i < args.docs or d.id in judged]
    print(f"machine: {harness.machine()}, load average {os.getloadavg()[0]:.1f} at start")
    print(f"corpus: {args.dataset.name}, {len(docs)} documents, {len(dataset.queries)} questions")

    work = Path(tempfile.mkdtemp(prefix="grounded-bench-extractive-"))
    settings = Settings(data_dir=work / "data", collection="bench")
    embedder = build_embedder(settings)
    index = EdgeIndex(settings.data_dir)
    report = build_ingestor(settings, index, embedder, "bench").ingest(docs)
    print(f"ingest: {report.chunks_written} chunks in {report.seconds:.1f} s")

    retriever = HybridRetriever(index, embedder, settings)
    new = ExtractiveGenerator(embedder)
    uncapped = ExtractiveGenerator(embedder, candidate_tokens=None)
    best_only = ExtractiveGenerator(embedder, candidate_tokens=None, max_sentences=1)
    results: list[tuple[str, RetrievalResult]] = []
    for qid, question in dataset.queries.items():
        params = SearchParams(question, collection="bench", top_k=new.context_chunks)
        results.append((qid, retriever.retrieve(params)))
    index.close()
    shutil.rmtree(work, ignore_errors=True)

    def old_input(result: RetrievalResult) -> RetrievalResult:
        chunks = [replace(c, sentences=None) for c in result.chunks]
        return replace(result, chunks=chunks)

    ways = {
        "old: split at query time, all embedded": (uncapped, old_input),
        "stored offsets, all embedded": (uncapped, lambda r: r),
        f"new: stored offsets, <= {new.candidate_tokens} tokens embedded": (new, lambda r: r),
    }
    for generator, prepare in ways.values():  # warm-up: first calls load and allocate
        for _, result in results[:5]:
            generator.generate(dataset.queries[results[0][0]], prepare(result))

    times: dict[str, list[float]] = {name: [] for name in ways}
    answers: dict[str, list[Answer]] = {name: [] for name in ways}
    for qid, result in results:
        for name, (generator, prepare) in ways.items():
            given = prepare(result)
            started = time.perf_counter()
            answer = generator.generate(dataset.queries[qid], given)
            times[name].append((time.perf_counter() - started) * 1000)
            answers[name].append(answer)

    print(
        f"\nExtractiveGenerator.generate, top {new.context_chunks} chunks, per question "
        f"(torch threads: {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}):"
    )
    print(f"{'way':<52} {'p50 ms':>8} {'p95 ms':>8} {'mean':>8}")
    rows = {}
    for name, values in times.items():
        rows[name] = {
            "p50_ms": round(statistics.median(values), 2),
            "p95_ms": round(harness.percentile(values, 95), 2),
            "mean_ms": round(statistics.fmean(values), 2),
        }
        row = rows[name]
        print(f"{name:<52} {row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} {row['mean_ms']:>8.1f}")
    old_name, all_name, new_name = ways
    ratio_p50 = rows[old_name]["p50_ms"] / rows[new_name]["p50_ms"]
    ratio_p95 = rows[old_name]["p95_ms"] / rows[new_name]["p95_ms"]
    print(f"old / new: {ratio_p50:.1f}x at p50, {ratio_p95:.1f}x at p95")
    print(f"target: new p95 <= {TARGET_MS:.0f} ms: {rows[new_name]['p95_ms'] <= TARGET_MS}")

    # What the cap costs in quality, against the uncapped ranking of the same sentences.
    kept_best, overlap = 0, []
    relevant = {name: 0 for name in (all_name, new_name)}
    for i, (qid, result) in enumerate(results):
        full, capped = quoted(answers[all_name][i]), quoted(answers[new_name][i])
        kept_best += quoted(best_only.generate(dataset.queries[qid], result)) <= capped
        overlap.append(len(full & capped) / len(full | capped) if full | capped else 1.0)
        for name in relevant:
            docs_quoted = {c.doc_id for c in answers[name][i].citations}
            relevant[name] += bool(docs_quoted & dataset.qrels[qid].keys())
    n = len(results)
    print(
        f"\nnew vs stored-all-embedded: best sentence kept {kept_best / n:.2f}, "
        f"mean Jaccard of the answers' sentences {statistics.fmean(overlap):.2f}"
    )
    print(
        f"answers citing a judged relevant document: all embedded {relevant[all_name] / n:.2f}, "
        f"new {relevant[new_name] / n:.2f}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": harness.machine(),
                    "torch_threads": torch.get_num_threads(),
                    "load_average_1m": os.getloadavg()[0],
                    "corpus": args.dataset.name,
                    "documents": len(docs),
                    "questions": n,
                    "ways": rows,
                    "old_over_new_p50": round(ratio_p50, 2),
                    "old_over_new_p95": round(ratio_p95, 2),
                    "best_kept": round(kept_best / n, 3),
                    "jaccard": round(statistics.fmean(overlap), 3),
                    "relevant_cited": {k: round(v / n, 3) for k, v in relevant.items()},
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
