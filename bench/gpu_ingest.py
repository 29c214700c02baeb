"""Benchmark: ingest chunks/s on a GPU against the model-only ceiling measured in the same run.

    .venv/bin/python bench/gpu_ingest.py --device cuda --chunks 100000 --batch-size 1024
    .venv/bin/python bench/gpu_ingest.py --device cpu --chunks 64 --batch-size 16   # smoke run

On the same SciFact chunks (cycled when ``--chunks`` exceeds the corpus), one model, one run:

a. **ceiling**: the chunks tokenized beforehand (not timed), length-sorted batches already on
   the device, through the model (fp16 on CUDA) and back to the host: nothing but the model;
b. **plain encode**: ``SentenceTransformer.encode`` in fp32, the way ingest embeds today
   (``--skip-plain`` leaves it out);
c. **encode + upsert**: :class:`~ingest.gpu_encode.FastEncoder` (fp16, length-sorted batches,
   tokenized, and BM25-encoded, in DataLoader workers) with upserts into an embedded Qdrant Edge
   collection overlapped with the next batch's embedding, written from a process of its own
   (:class:`~ingest.index.process.ProcessIndex`, as ``grounded ingest`` writes on a GPU:
   ``c_encode_upsert``) and, as before, from ``--writers`` threads in this process
   (``c_encode_upsert_in_process``; with a ProcessIndex more writer threads only queue);
d. **pipeline**: the real :class:`~ingest.pipeline.Ingestor` (chunking, re-ingest checks, BM25,
   upserts overlapped with embedding) over about ``--pipeline-chunks`` chunks' documents,
   embedding with :class:`~ingest.gpu_encode.FastEmbedder`, chunking and BM25-encoding in
   ``--chunk-workers`` processes (``ingest_chunk_workers``), writing through a ProcessIndex.

With ``--switch-us N`` the in-process writes and (c) run again with ``sys.setswitchinterval`` at
N µs: building a Qdrant Edge Point gives up the GIL ~94 times, so a writer thread beside a
thread busy in Python keeps losing it (``bench/edge_writes.py``;
``writes_only_in_process_switch_Nus``, ``c_encode_upsert_in_process_switch_Nus``).

And the parts alone, to show which one bounds (c) and (d): **chunking** (on one core, and in
the pool of ``--chunk-workers`` processes), **workers** (tokenization + BM25 in the worker
processes, no model), **encode** (FastEncoder without BM25 or writes), **writes** (BM25 vectors
and embeddings made beforehand, upserts only).

Measured on one H100 (2026-11-27, 100,000 chunks, batch 1024, 4 tokenizer workers, before BM25
moved into the workers and before the writes had a process of their own, so (c) was what is now
``c_encode_upsert_in_process``): ceiling 14,421 chunks/s; plain fp32 encode 964/s (0.067);
encode + upsert 2,264/s (0.157); the pipeline did not finish 20,000 chunks in the ~100 s left: one
Xeon core chunks ~210 chunks/s. See docs/scaling.md, "GPU ingestion".

It prints chunks/s of each and the ratios to (a). Goal: (c) >= 70% of (a), >= 20,000 chunks/s on
one H200 (issue #11).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import harness  # noqa: E402
from eval.datasets import load_beir  # noqa: E402
from ingest.build import build_chunker, build_ingestor  # noqa: E402
from ingest.chunk_pool import ChunkPool  # noqa: E402
from ingest.documents import Document  # noqa: E402
from ingest.embedding import resolve_model_path  # noqa: E402
from ingest.gpu_encode import FastEmbedder, FastEncoder, length_order  # noqa: E402
from ingest.index import IndexPoint, Manifest  # noqa: E402
from ingest.settings import Settings  # noqa: E402
from ingest.sparse import Bm25Encoder, Bm25Params, SparseVec  # noqa: E402

# BM25 length normalisation needs an average; any fixed one costs the same to compute.
AVG_LEN = 150.0


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(device: str, fn: Callable[[], Any]) -> float:
    synchronize(device)
    started = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - started


def corpus_chunks(
    dataset: Path, settings: Settings, model: Any, n: int, pipeline_n: int
) -> tuple[list[Document], list[str], tuple[int, float], tuple[int, float]]:
    """``n`` chunk texts of the corpus (cycled), documents that chunk into about
    ``pipeline_n``, and (chunks, seconds) of chunking on one core (a sample) and in a pool of
    processes (the corpus)."""
    # The chunker needs only the model's tokenizer and window: no second model for it.
    window = SimpleNamespace(tokenizer=model.tokenizer, max_tokens=int(model.max_seq_length or 512))
    chunker = build_chunker(settings, window)
    corpus = load_beir(dataset).corpus
    started = time.perf_counter()
    one_core = sum(len(chunker.chunk(doc)) for doc in corpus[:300])
    one = (one_core, time.perf_counter() - started)
    # Each document is chunked once: a copy in a later round has the same chunks (the pipeline
    # run (d) still chunks every copy itself).
    started = time.perf_counter()
    with ChunkPool(chunker, settings.ingest_chunk_workers or 1) as pool:
        per_doc = [[c.embed_text for c in chunks] for chunks in pool.chunk_many(corpus)]
    pooled = (sum(map(len, per_doc)), time.perf_counter() - started)
    texts: list[str] = []
    docs: list[Document] = []
    pipeline_texts = 0
    round_ = 0
    while len(texts) < n or pipeline_texts < pipeline_n:
        for doc, chunks in zip(corpus, per_doc, strict=True):
            if pipeline_texts < pipeline_n:
                # a copy per round: new ids, so the pipeline writes it again
                docs.append(
                    Document(f"{doc.id}~{round_}", doc.text, doc.title, doc.source)
                    if round_
                    else doc
                )
                pipeline_texts += len(chunks)
            if len(texts) < n:
                texts += chunks
        round_ += 1
    return docs, texts[:n], one, pooled


def ceiling(encoder: FastEncoder, texts: list[str], device: str) -> float:
    """Seconds for the pre-tokenized, length-sorted batches through the model and back."""
    import torch

    model = encoder.model
    batches = [
        {k: v.to(device) if torch.is_tensor(v) else v for k, v in features.items()}
        for _, features, _ in encoder.tokenized(texts)
    ]

    def run() -> None:
        with torch.inference_mode():
            for features in batches:
                out = model(features)["sentence_embedding"]
                torch.nn.functional.normalize(out.float(), p=2, dim=1).cpu()

    return timed(device, run)


Batch = tuple[np.ndarray, np.ndarray, list[SparseVec]]


def write_batches(
    batches: Iterator[Batch],
    texts: list[str],
    data_dir: Path,
    dimension: int,
    writers: int,
    process: bool,
) -> tuple[float, int]:
    """Seconds to write every ``(positions, vectors, bm25 vectors)`` batch (dense + BM25 +
    payload) into a new Edge collection from ``writers`` threads, while ``batches`` makes the
    next; and the points written. ``process``: the shard is served from a process of its own
    (:class:`~ingest.index.process.ProcessIndex`), as ``grounded ingest`` writes on a GPU."""
    index = harness.edge_index(data_dir, process)
    index.create_collection(
        "gpu", Manifest("bench", dimension, Bm25Params(avg_len=AVG_LEN), "bench")
    )
    # A bounded queue: the producer runs ahead of the writers by at most a few batches.
    pending: queue.Queue[Batch | None] = queue.Queue(maxsize=4 * writers)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            while (item := pending.get()) is not None:
                positions, vectors, sparse = item
                index.upsert(
                    "gpu",
                    [
                        IndexPoint(
                            str(uuid.UUID(int=int(p) + 1)),
                            vec,
                            sv,
                            {"tenant": "default", "doc_id": f"d{p}", "text": texts[p]},
                        )
                        for p, vec, sv in zip(positions, vectors, sparse, strict=True)
                    ],
                )
        except BaseException as exc:  # surfaced by the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=write, daemon=True) for _ in range(writers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    with index.bulk_load("gpu"):
        for item in batches:
            if errors:
                break
            pending.put(item)
        for _ in threads:
            pending.put(None)
        for t in threads:
            t.join()
    seconds = time.perf_counter() - started
    if errors:
        raise errors[0]
    count = index.count("gpu")
    index.close()
    return seconds, count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda, cuda:1, cpu ...")
    parser.add_argument("--chunks", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=None, help="tokenizer processes")
    parser.add_argument("--writers", type=int, default=1, help="upsert threads")
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument(
        "--pipeline-chunks",
        type=int,
        default=20_000,
        help="about this many chunks through the real pipeline (d); 0 skips it. Smaller than "
        "--chunks because the pipeline chunks every copy of a document again",
    )
    parser.add_argument(
        "--dataset", type=Path, default=REPO.parent / "shared" / "datasets" / "scifact"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument(
        "--chunk-workers",
        type=int,
        default=max(1, (os.cpu_count() or 2) // 2),
        help="chunking processes, for the preparation and for (d)",
    )
    parser.add_argument("--skip-plain", action="store_true", help="leave out (b), the slowest")
    parser.add_argument(
        "--switch-us",
        type=int,
        action="append",
        help="also measure writes and (c) with sys.setswitchinterval at this many µs",
    )
    args = parser.parse_args()
    sizes = [args.chunks, args.batch_size, args.writers, args.chunk_workers]
    if min(sizes + (args.switch_us or [])) <= 0:
        parser.error(
            "--chunks, --batch-size, --writers, --chunk-workers and --switch-us must be > 0"
        )
    if args.pipeline_chunks < 0:
        parser.error("--pipeline-chunks must be >= 0")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda, but torch sees no CUDA device; use --device cpu")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sentence_transformers import SentenceTransformer

    settings = Settings(
        embedding_model=args.model,
        embedding_batch_size=args.batch_size,
        ingest_chunk_workers=args.chunk_workers,
        ingest_batch_docs=4096,
    )
    # fp32 whatever the saved weights are: (b) runs the model as ingest runs it today.
    model = SentenceTransformer(resolve_model_path(args.model), device=args.device).float()
    docs, texts, one_core, pooled = corpus_chunks(
        args.dataset, settings, model, args.chunks, args.pipeline_chunks
    )
    print(
        f"machine: {harness.machine()}, device {args.device}"
        + (f" ({_gpu_name()})" if args.device.startswith("cuda") else "")
        + f"\n{len(texts)} chunks of {args.dataset.name}, batch {args.batch_size}"
    )
    rates: dict[str, float] = {}

    def phase(name: str, chunks: int, seconds: float) -> None:
        # Printed as each phase ends: a run cut short still reports what it measured.
        rates[name] = chunks / seconds
        print(f"{name}: {chunks} chunks in {seconds:.2f} s = {rates[name]:.1f}/s", flush=True)

    phase("chunking_one_core", *one_core)
    phase("chunking_pool", *pooled)
    warm = texts[: args.batch_size]
    model.encode(warm, batch_size=args.batch_size)
    if not args.skip_plain:  # first, while the model is still fp32 as ingest runs it today
        phase(
            "b_plain_encode",
            len(texts),
            timed(
                args.device,
                lambda: model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True),
            ),
        )
    encoder = FastEncoder(model, batch_size=args.batch_size, workers=args.workers)  # fp16 on CUDA
    encoder.encode(warm)
    phase("a_ceiling", len(texts), ceiling(encoder, texts, args.device))

    bm25 = Bm25Encoder(Bm25Params(avg_len=AVG_LEN))
    sparse: list[SparseVec] = [SparseVec([], [])] * len(texts)

    def workers_only() -> None:
        for positions, _, extra in encoder.tokenized(texts, side=bm25.embed_documents):
            for p, sv in zip(positions, extra, strict=True):
                sparse[p] = sv

    phase("workers_tokenize_bm25", len(texts), timed(args.device, workers_only))
    vectors = np.zeros((len(texts), encoder.dimension), dtype=np.float32)

    def encode_only() -> None:
        vectors[:] = encoder.encode(texts)

    phase("encode_only", len(texts), timed(args.device, encode_only))
    order = length_order(texts)
    batches = [
        (rows, vectors[rows], [sparse[p] for p in rows])
        for rows in (order[i : i + args.batch_size] for i in range(0, len(texts), args.batch_size))
    ]
    # Writes from a process of their own (as grounded ingest writes on a GPU), then from writer
    # threads in this process, the way it wrote before, at each --switch-us too: a thread
    # building Points beside one busy in Python loses the GIL ~94 times per point
    # (bench/edge_writes.py).
    variants = [("", True, None), ("_in_process", False, None)] + [
        (f"_in_process_switch_{us}us", False, us) for us in args.switch_us or []
    ]
    with tempfile.TemporaryDirectory(prefix="grounded-gpu-") as work:
        for suffix, process, us in variants:
            with harness.switch_interval(us / 1e6 if us else None):
                seconds, written = write_batches(
                    iter(batches),
                    texts,
                    Path(work) / f"w{suffix}",
                    encoder.dimension,
                    args.writers,
                    process,
                )
                phase(f"writes_only{suffix}", written, seconds)
                seconds, written = write_batches(
                    encoder.batches(texts, side=bm25.embed_documents),
                    texts,
                    Path(work) / f"c{suffix}",
                    encoder.dimension,
                    args.writers,
                    process,
                )
                phase(f"c_encode_upsert{suffix}", written, seconds)
        if args.pipeline_chunks:
            embedder = FastEmbedder(
                args.model, model, batch_size=args.batch_size, workers=args.workers
            )
            index = harness.edge_index(Path(work) / "d", process=True)
            report = build_ingestor(settings, index, embedder, "gpu").ingest(docs)
            index.close()
            phase("d_pipeline", report.chunks_written, report.seconds)
    print(f"\n{'path':<32} {'chunks/s':>10} {'/ ceiling':>10}")
    for name, rate in rates.items():
        print(f"{name:<32} {rate:>10.1f} {rate / rates['a_ceiling']:>10.3f}")
    print("goal: c / a >= 0.70 and >= 20,000 chunks/s on one H200")
    result = {
        "machine": harness.machine(),
        "device": args.device,
        "gpu": _gpu_name() if args.device.startswith("cuda") else None,
        "chunks": len(texts),
        "batch_size": args.batch_size,
        "workers": encoder.workers,
        "writers": args.writers,
        "chunk_workers": args.chunk_workers,
        "fp16": encoder.fp16,
        "switch_us": args.switch_us or [],
        "chunks_per_s": {k: round(v, 1) for k, v in rates.items()},
        "ratios_to_ceiling": {k: round(v / rates["a_ceiling"], 3) for k, v in rates.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gpu_ingest-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"written: {path}")


def _gpu_name() -> str:
    import torch

    return str(torch.cuda.get_device_name())


if __name__ == "__main__":
    main()
