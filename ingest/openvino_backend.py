"""The ``openvino-int8`` embedding backend: the traced model statically quantised to int8 by NNCF
and run by OpenVINO.

ONNX Runtime's ``onnx-int8`` quantises activations at run time, batch by batch. Static
quantisation fixes every activation's int8 range once, from calibration passages, so no range is
computed per batch; OpenVINO runs the int8 matrix products with VNNI and, where the CPU has them,
the remaining float ops in bf16. On the 2-core development machine that embeds 1.3–1.5× as many
chunks per second as ``onnx-int8`` with vectors closer to torch's (docs/performance.md).

The calibration passages (``calibration.txt``, 97 passages of ~120–200 words) are prose from this
project's own README and docs, cut of code and tables: text every installation has, so an export
is the same on every machine, and unrelated to any evaluation corpus (the three sets that judge
the backend are science abstracts and Wikipedia paragraphs).

Example::

    quantize(folder, "model.onnx", tokenizer, ["input_ids", "attention_mask"], max_tokens=256)
    vectors = OpenVinoRunner(folder, threads=None)(feed)   # feed: the tokenizer's int64 arrays
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

IR_FILE = "model.xml"  # and model.bin beside it
CALIBRATION_BATCH = 4  # as ingest batches on CPU
# The default model measures mean 0.997, min 0.995 on SciFact passages (docs/performance.md).
MIN_MEAN_COSINE, MIN_COSINE = 0.99, 0.95


def calibration_passages() -> list[str]:
    text = resources.files("ingest").joinpath("calibration.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def quantize(
    folder: Path, onnx_file: str, tokenizer: Any, names: list[str], max_tokens: int
) -> None:
    """``folder/onnx_file`` (a traced, unfused fp32 graph) → ``folder/model.xml`` in int8.

    NNCF's transformer recipe: MatMuls in int8 with per-channel weights, softmax and layer norms
    left in float, then fast bias correction."""
    import nncf  # type: ignore[import-untyped]
    import openvino as ov  # type: ignore[import-untyped]

    passages = calibration_passages()
    items = []
    for start in range(0, len(passages), CALIBRATION_BATCH):
        encoded = tokenizer(
            passages[start : start + CALIBRATION_BATCH],
            padding=True,
            truncation=True,
            max_length=max_tokens,
            return_tensors="np",
        )
        items.append({n: encoded[n].astype(np.int64) for n in names})
    model = ov.Core().read_model(str(folder / onnx_file))
    # NNCF draws progress bars on stdout, which is a command's JSON output (--json).
    with contextlib.redirect_stdout(io.StringIO()):
        quantized = nncf.quantize(
            model,
            nncf.Dataset(items),
            model_type=nncf.ModelType.TRANSFORMER,
            preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(items),
        )
    ov.save_model(quantized, str(folder / IR_FILE), compress_to_fp16=False)
    _check_agreement(folder, folder / onnx_file, items)
    (folder / onnx_file).unlink()


def _check_agreement(folder: Path, fp32: Path, items: list[dict[str, np.ndarray]]) -> None:
    """Refuse an int8 model whose vectors stray from the fp32 graph's on the calibration
    passages: a model the recipe does not suit must not silently index worse vectors."""
    import onnxruntime as ort  # type: ignore[import-untyped]

    from .embedding import ExportRefused, _unit

    session = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    runner = OpenVinoRunner(folder, threads=None)
    cosines = np.concatenate(
        [np.sum(_unit(session.run(None, feed)[0]) * _unit(runner(feed)), axis=1) for feed in items]
    )
    if cosines.mean() < MIN_MEAN_COSINE or cosines.min() < MIN_COSINE:
        raise ExportRefused(
            f"the openvino-int8 export strays from the fp32 model (cosine mean "
            f"{cosines.mean():.4f}, min {cosines.min():.4f}); use another embedding backend"
        )


class OpenVinoRunner:
    """A compiled int8 model. ``threads`` per encode call as for ONNX Runtime: ``None`` = one
    stream over every core (ingest's bulk batches); ``k`` = as many streams of ``k`` threads as
    the cores hold, so concurrent requests (``grounded serve`` uses 1) run side by side instead
    of queueing for one stream."""

    def __init__(self, folder: Path, threads: int | None) -> None:
        import openvino as ov

        cores = os.cpu_count() or 1
        streams = max(1, cores // threads) if threads else 1
        per_stream = threads or cores
        self._compiled = ov.Core().compile_model(
            str(folder / IR_FILE),
            "CPU",
            {"NUM_STREAMS": streams, "INFERENCE_NUM_THREADS": streams * per_stream},
        )
        # An infer request serves one call at a time; request threads are pooled, so one each.
        self._local = threading.local()

    def __call__(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        return np.array(request.infer(feed)[0], dtype=np.float32)
