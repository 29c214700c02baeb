"""Fast bulk encoding with a sentence-transformers model: what a GPU needs to stay busy.

``SentenceTransformer.encode`` tokenizes each batch on the calling thread, then runs the model,
then copies the result back, one after the other; on a GPU the tokenizer becomes the bottleneck
long before the model does. :class:`FastEncoder` keeps the model fed:

- texts are sorted by length (longest first) so each batch pads to similar lengths, and the
  vectors come back in the caller's order;
- tokenization runs in ``torch.utils.data.DataLoader`` worker processes, several batches ahead
  of the model, into pinned memory copied to the GPU without blocking;
- on CUDA the model runs in fp16 (cast once, in place) under ``torch.inference_mode``;
- :meth:`FastEncoder.batches` yields each batch's vectors as soon as they are ready, so a
  caller can write batch *k* while batch *k+1* is being embedded (``bench/gpu_ingest.py``);
- other per-text work the writer needs (BM25 vectors, say) can ride along in the workers
  (``side=``): in the main process it would hold the GIL that feeds the GPU and runs the writes.

On CPU it falls back cleanly: fp32, tokenization in-process (``workers=0``), the same vectors
as ``encode(..., normalize_embeddings=True)`` within float tolerance.

Example::

    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer("all-MiniLM-L6-v2", device="cuda")
    encoder = FastEncoder(model, batch_size=1024, workers=4)   # fp16 on CUDA
    vectors = encoder.encode(texts)                              # (len(texts), 384), unit length
    for positions, batch, sparse in encoder.batches(texts, side=bm25.embed_documents):
        write(positions, batch, sparse)                          # positions index into texts
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np


def length_order(texts: Sequence[str]) -> np.ndarray:
    """Positions of ``texts``, longest first (characters: a free proxy for tokens); stable, so
    equal lengths keep their order."""
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    return np.argsort(-lengths, kind="stable")


class _Batches:
    """The DataLoader's dataset: item ``i`` is batch ``i`` of the length-sorted texts, tokenized
    and passed through ``side`` (in a worker process when there are workers)."""

    def __init__(
        self,
        model: Any,
        texts: Sequence[str],
        order: np.ndarray,
        size: int,
        side: Callable[[list[str]], Any] | None,
    ) -> None:
        self.model = model
        self.texts = texts
        self.order = order
        self.size = size
        self.side = side

    def __len__(self) -> int:
        return (len(self.order) + self.size - 1) // self.size

    def __getitem__(self, i: int) -> tuple[np.ndarray, dict[str, Any], Any]:
        positions = self.order[i * self.size : (i + 1) * self.size]
        texts = [self.texts[p] for p in positions]
        features = self.model.preprocess(texts)
        return positions, features, self.side(texts) if self.side else None


def _unbatched(item: Any) -> Any:
    # Each dataset item is already a whole batch: the DataLoader's own batching is off.
    return item


def gpu_helper_processes() -> int:
    """Processes of one kind that prepare work for a GPU: half the CPU cores, at most 8. Both
    :class:`FastEncoder`'s tokenizers and a bulk ingest's chunkers take this many, so with the
    feeding process (and the index's, on an embedded collection) a bulk ingest runs slightly
    more processes than cores; the tokenizers wait while the GPU runs, the chunkers between
    batches."""
    return min(8, max(1, (os.cpu_count() or 1) // 2))


class FastEncoder:
    """Length-sorted, worker-tokenized, fp16-on-CUDA encoding of many texts with one model.

    Args:
        model: a loaded ``SentenceTransformer``; its device decides the path. On CUDA with
            ``fp16`` it is cast to half precision in place (queries then run in fp16 too).
        batch_size: texts per forward pass; large (512-2048) on a GPU.
        workers: tokenizer processes; ``None`` = 0 on CPU (they would compete with the model
            for the same cores); on CUDA half the CPU cores, at most 8 (one core tokenizes
            ~2,000 256-token chunks/s, so a GPU at ~15,000/s needs several).
        fp16: half precision; ``None`` = on for CUDA, off elsewhere. Ignored on CPU.
        prefetch: batches each worker tokenizes ahead of the model.
    """

    def __init__(
        self,
        model: Any,
        *,
        batch_size: int = 256,
        workers: int | None = None,
        fp16: bool | None = None,
        prefetch: int = 4,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        if workers is not None and workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        if prefetch <= 0:
            raise ValueError(f"prefetch must be > 0, got {prefetch}")
        import torch

        self.model = model
        self.device = torch.device(model.device)
        self.cuda = self.device.type == "cuda"
        self.batch_size = batch_size
        default_workers = gpu_helper_processes() if self.cuda else 0
        self.workers = default_workers if workers is None else workers
        self.fp16 = bool(self.cuda if fp16 is None else fp16) and self.cuda
        self.prefetch = prefetch
        self.dimension = int(model.get_embedding_dimension())
        if self.fp16:
            model.half()
        model.eval()

    def tokenized(
        self, texts: Sequence[str], side: Callable[[list[str]], Any] | None = None
    ) -> Iterator[tuple[np.ndarray, dict[str, Any], Any]]:
        """``(positions, features, extra)`` per length-sorted batch, as the model will get them:
        the workers' half of :meth:`batches` (``bench/gpu_ingest.py`` times it alone)."""
        if not texts:
            return
        from torch.utils.data import DataLoader

        order = length_order(texts)
        yield from DataLoader(
            _Batches(self.model, texts, order, self.batch_size, side),
            batch_size=None,
            collate_fn=_unbatched,
            num_workers=self.workers,
            pin_memory=self.cuda,
            prefetch_factor=self.prefetch if self.workers else None,
            persistent_workers=False,
        )

    def batches(
        self, texts: Sequence[str], side: Callable[[list[str]], Any] | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray, Any]]:
        """``(positions, vectors, extra)`` per batch, longest texts first: ``vectors[j]`` is the
        unit length embedding of ``texts[positions[j]]`` (float32); ``extra`` is
        ``side([texts[p] for p in positions])``, computed beside the tokenizer, or ``None``."""
        import torch

        with torch.inference_mode():
            for positions, features, extra in self.tokenized(texts, side):
                features = {
                    k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                    for k, v in features.items()
                }
                out = self.model(features)["sentence_embedding"]
                out = torch.nn.functional.normalize(out.float(), p=2, dim=1)
                yield np.asarray(positions), out.cpu().numpy(), extra

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """All vectors, in the order of ``texts``: shape ``(len(texts), dimension)``."""
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for positions, batch, _ in self.batches(texts):
            vectors[positions] = batch
        return vectors


class FastEmbedder:
    """An :class:`~ingest.embedding.Embedder` whose passages go through :class:`FastEncoder`:
    what the ingest pipeline (:class:`~ingest.pipeline.Ingestor`) takes to embed on a GPU.
    Queries, one at a time, take the model's plain ``encode``.

    Example::

        model = SentenceTransformer(resolve_model_path("all-MiniLM-L6-v2"), device="cuda")
        embedder = FastEmbedder("all-MiniLM-L6-v2", model, batch_size=1024)
        ingestor = build_ingestor(settings, index, embedder)   # Ingestor overlaps the writes

    Args:
        name: the model name recorded in each collection's manifest.
        model: the loaded ``SentenceTransformer``.
        query_prefix, passage_prefix: as :class:`~ingest.embedding.SentenceTransformerEmbedder`.
        batch_size, workers, fp16: as :class:`FastEncoder`.
    """

    def __init__(
        self,
        name: str,
        model: Any,
        *,
        query_prefix: str = "",
        passage_prefix: str = "",
        batch_size: int = 256,
        workers: int | None = None,
        fp16: bool | None = None,
    ) -> None:
        self.name = name
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.encoder = FastEncoder(model, batch_size=batch_size, workers=workers, fp16=fp16)
        self.dimension = self.encoder.dimension
        self.max_tokens = int(model.max_seq_length or 512)

    @property
    def tokenizer(self) -> Any:
        return self.encoder.model.tokenizer

    @property
    def on_gpu(self) -> bool:
        return self.encoder.cuda

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        if self.passage_prefix:
            texts = [self.passage_prefix + t for t in texts]
        return self.encoder.encode(texts)

    def embed_query(self, text: str) -> np.ndarray:
        vector = self.encoder.model.encode(
            [self.query_prefix + text], normalize_embeddings=True, convert_to_numpy=True
        )
        return np.asarray(vector[0], dtype=np.float32)
