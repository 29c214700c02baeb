"""Benchmark: ingest chunks/s on a GPU against the model-only ceiling measured in the same run.

    .venv/bin/python bench/gpu_ingest.py --device cuda --chunks 200000 --batch-size 1024
    .venv/bin/python bench/gpu_ingest.py --device cpu --chunks 64 --batch-size 16   # smoke run

On the same SciFact chunks (cycled when ``--chunks`` exceeds the corpus), one model, one run:

a. **ceiling**: the chunks tokenized beforehand (not timed), length-sorted batches already on
   the device, through the model (fp16 on CUDA) and back to the host: nothing but the model;
b. **plain encode**: ``SentenceTransformer.encode`` in fp32, the way ingest embeds today;
c. **encode + upsert**: :class:`~ingest.gpu_encode.FastEncoder` (fp16, length-sorted batches,
   tokenized in DataLoader workers) with BM25 vectors and upserts into an embedded Qdrant Edge
   collection in a writer thread, overlapped with the next batch's embedding;
d. **pipeline**: the real :class:`~ingest.pipeline.Ingestor` (chunking, re-ingest checks, BM25,
   upserts overlapped with embedding) over the documents, embedding with
   :class:`~ingest.gpu_encode.FastEmbedder`.

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
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import harness  # noqa: E402
from eval.datasets import load_beir  # noqa: E402
from ingest.build import build_chunker, build_ingestor  # noqa: E402
from ingest.documents import Document  # noqa: E402
from ingest.embedding import resolve_model_path  # noqa: E402
from ingest.gpu_encode import FastEmbedder, FastEncoder, length_order  # noqa: E402
from ingest.index import EdgeIndex, IndexPoint, Manifest  # noqa: E402
from ingest.settings import Settings  # noqa: E402
from ingest.sparse import Bm25Encoder, Bm25Params, measure_avg_len  # noqa: E402


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
    dataset: Path, settings: Settings, model: Any, n: int
) -> tuple[list[Document], list[str]]:
    """``n`` chunk texts of the corpus (cycled), and documents that chunk into about ``n``."""
    # The chunker needs only the model's tokenizer and window: no second model for it.
    window = SimpleNamespace(tokenizer=model.tokenizer, max_tokens=int(model.max_seq_length or 512))
    chunker = build_chunker(settings, window)
    docs: list[Document] = []
    texts: list[str] = []
    corpus = load_beir(dataset).corpus
    round_ = 0
    while len(texts) < n:
        for doc in corpus:
            if round_:  # a copy per round: new ids, so the pipeline writes it again
                doc = Document(f"{doc.id}~{round_}", doc.text, doc.title, doc.source)
            docs.append(doc)
            texts += [c.embed_text for c in chunker.chunk(doc)]
            if len(texts) >= n:
                break
        round_ += 1
    return docs, texts[:n]


def ceiling(model: Any, texts: list[str], batch_size: int, device: str) -> float:
    """Seconds for the pre-tokenized, length-sorted batches through the model and back."""
    import torch

    order = length_order(texts)
    batches = []
    for start in range(0, len(texts), batch_size):
        features = model.preprocess([texts[i] for i in order[start : start + batch_size]])
        batches.append({k: v.to(device) if torch.is_tensor(v) else v for k, v in features.items()})

    def run() -> None:
        with torch.inference_mode():
            for features in batches:
                out = model(features)["sentence_embedding"]
                torch.nn.functional.normalize(out.float(), p=2, dim=1).cpu()

    return timed(device, run)


def encode_and_upsert(
    encoder: FastEncoder, texts: list[str], data_dir: Path, writers: int
) -> tuple[float, int]:
    """Seconds to embed ``texts`` and write them (dense + BM25 + payload) into a new Edge
    collection, writes overlapped with embedding; and the points written."""
    bm25 = Bm25Encoder(Bm25Params(avg_len=measure_avg_len(texts[:2000])))
    index = EdgeIndex(data_dir)
    index.create_collection("gpu", Manifest("bench", encoder.dimension, bm25.params, "bench"))
    # A bounded queue: the GPU runs ahead of the writers by at most a few batches.
    pending: queue.Queue[tuple[np.ndarray, np.ndarray] | None] = queue.Queue(maxsize=4 * writers)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            while (item := pending.get()) is not None:
                positions, vectors = item
                index.upsert(
                    "gpu",
                    [
                        IndexPoint(
                            str(uuid.UUID(int=int(p) + 1)),
                            vec,
                            bm25.embed_document(texts[p]),
                            {"tenant": "default", "doc_id": f"d{p}", "text": texts[p]},
                        )
                        for p, vec in zip(positions, vectors, strict=True)
                    ],
                )
        except BaseException as exc:  # surfaced by the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=write, daemon=True) for _ in range(writers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    with index.bulk_load("gpu"):
        for item in encoder.batches(texts):
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
    parser.add_argument("--writers", type=int, default=2, help="upsert threads")
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--skip-pipeline", action="store_true", help="skip (d)")
    parser.add_argument(
        "--dataset", type=Path, default=REPO.parent / "shared" / "datasets" / "scifact"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    if args.chunks <= 0 or args.batch_size <= 0 or args.writers <= 0:
        parser.error("--chunks, --batch-size and --writers must be > 0")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda, but torch sees no CUDA device; use --device cpu")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sentence_transformers import SentenceTransformer

    settings = Settings(embedding_model=args.model, embedding_batch_size=args.batch_size)
    model = SentenceTransformer(resolve_model_path(args.model), device=args.device)
    docs, texts = corpus_chunks(args.dataset, settings, model, args.chunks)
    print(
        f"machine: {harness.machine()}, device {args.device}"
        + (f" ({_gpu_name()})" if args.device.startswith("cuda") else "")
        + f"\n{len(texts)} chunks of {args.dataset.name}, batch {args.batch_size}"
    )
    warm = texts[: args.batch_size]
    model.encode(warm, batch_size=args.batch_size)

    # (b) first: the model is still fp32, as ingest runs it today.
    plain_s = timed(
        args.device,
        lambda: model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True),
    )
    encoder = FastEncoder(model, batch_size=args.batch_size, workers=args.workers)  # fp16 on CUDA
    encoder.encode(warm)
    ceiling_s = ceiling(model, texts, args.batch_size, args.device)
    with tempfile.TemporaryDirectory(prefix="grounded-gpu-") as work:
        upsert_s, written = encode_and_upsert(encoder, texts, Path(work) / "c", args.writers)
        pipeline: dict[str, float] = {}
        if not args.skip_pipeline:
            embedder = FastEmbedder(
                args.model, model, batch_size=args.batch_size, workers=args.workers
            )
            index = EdgeIndex(Path(work) / "d")
            run_settings = settings.model_copy(update={"ingest_batch_docs": 4096})
            report = build_ingestor(run_settings, index, embedder, "gpu").ingest(docs)
            index.close()
            pipeline = {"chunks": report.chunks_written, "seconds": report.seconds}
    rates = {
        "a_ceiling": len(texts) / ceiling_s,
        "b_plain_encode": len(texts) / plain_s,
        "c_encode_upsert": written / upsert_s,
    }
    if pipeline:
        rates["d_pipeline"] = pipeline["chunks"] / pipeline["seconds"]
    print(f"\n{'path':<18} {'chunks/s':>10} {'/ ceiling':>10}")
    for name, rate in rates.items():
        print(f"{name:<18} {rate:>10.1f} {rate / rates['a_ceiling']:>10.3f}")
    print("goal: c / a >= 0.70 and >= 20,000 chunks/s on one H200")
    result = {
        "machine": harness.machine(),
        "device": args.device,
        "gpu": _gpu_name() if args.device.startswith("cuda") else None,
        "chunks": len(texts),
        "batch_size": args.batch_size,
        "workers": encoder.workers,
        "fp16": encoder.fp16,
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
