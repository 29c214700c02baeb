"""The embedding backends: chosen by settings, exported once into a cache that survives races,
and computing the same vectors as torch (fp32 exactly, int8 closely)."""

from __future__ import annotations

import copy
import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from support.cli_runner import grounded

import ingest.build
import ingest.embedding as embedding
from ingest.build import build_embedder
from ingest.embedding import EmbeddingCacheError, SentenceTransformerEmbedder, cached_export
from ingest.settings import Settings

SENTENCES = [
    "x",
    "The cat sat on the mat.",
    "Vitamin D deficiency is associated with a higher risk of hip fractures in older adults.",
    # Longer than the 256-token window: truncation must match torch's.
    " ".join(["Qdrant stores dense and sparse vectors for hybrid retrieval."] * 40),
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedding-cache")


@pytest.fixture(scope="module")
def torch_embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(backend="torch")


@pytest.mark.parametrize(
    ("backend", "floor"), [("onnx", 0.9999), ("onnx-int8", 0.95), ("openvino-int8", 0.95)]
)
def test_exported_vectors_agree_with_torch(
    backend: str, floor: float, cache: Path, torch_embedder: SentenceTransformerEmbedder
) -> None:
    onnx = build_embedder(Settings(embedding_backend=backend, embedding_cache_dir=cache))
    assert (onnx.backend, onnx.name) == (backend, torch_embedder.name)
    folder = cached_export(onnx.name, backend, cache)
    meta = json.loads((folder / embedding.META_FILE).read_text())
    if backend == "openvino-int8":
        # NNCF quantises the plain traced graph into OpenVINO's own format
        assert meta["fused"] is False and (folder / "model.xml").is_file()
        assert not (folder / embedding.ONNX_FILE).exists()
    else:
        # The default model's graph is fused into ONNX Runtime's kernels (what makes int8 fast).
        assert meta["fused"] is True
    assert (onnx.dimension, onnx.max_tokens) == (
        torch_embedder.dimension,
        torch_embedder.max_tokens,
    )
    # Documents in one padded batch of mixed lengths, and a query alone: both shapes of input.
    docs, reference = onnx.embed_documents(SENTENCES), torch_embedder.embed_documents(SENTENCES)
    cosines = (docs * reference).sum(axis=1)
    assert cosines.min() > floor, cosines
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-5)
    query = onnx.embed_query("does vitamin D prevent fractures?")
    assert float(query @ torch_embedder.embed_query("does vitamin D prevent fractures?")) > floor
    # The chunker counts tokens with this tokenizer: it must be the model's own.
    text = SENTENCES[2]
    assert onnx.tokenizer(text)["input_ids"] == torch_embedder.tokenizer(text)["input_ids"]
    assert onnx.embed_documents([]).shape == (0, onnx.dimension)


def test_a_fusion_that_changes_the_vectors_keeps_the_traced_graph(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    torch_embedder: SentenceTransformerEmbedder,
) -> None:
    fuse = embedding._fuse

    def checked_on_left_padding(path: Path, config: Any, tokenizer: Any, names: list[str]) -> bool:
        # The fused kernels read the mask as "first n tokens": left padding breaks that.
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.padding_side = "left"
        return fuse(path, config, tokenizer, names)

    monkeypatch.setattr(embedding, "_fuse", checked_on_left_padding)
    with caplog.at_level(logging.WARNING, logger="ingest.embedding"):
        folder = cached_export("all-MiniLM-L6-v2", "onnx", tmp_path)
    assert "ONNX fusion changed" in caplog.text and "kept the traced graph" in caplog.text
    assert json.loads((folder / embedding.META_FILE).read_text())["fused"] is False
    assert not (folder / "fused.onnx").exists()
    onnx = SentenceTransformerEmbedder(backend="onnx", cache_dir=tmp_path)
    cosines = (onnx.embed_documents(SENTENCES) * torch_embedder.embed_documents(SENTENCES)).sum(1)
    assert cosines.min() > 0.9999, cosines


def test_second_use_loads_the_cached_export(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = cached_export("all-MiniLM-L6-v2", "onnx-int8", cache)
    stamp = (first / "model.onnx").stat().st_mtime_ns

    def no_export(*args: Any) -> None:
        raise AssertionError("exported again although the cache holds the export")

    monkeypatch.setattr(embedding, "_export_fp32", no_export)
    monkeypatch.setattr(embedding, "_quantize_int8", no_export)
    embedder = SentenceTransformerEmbedder(backend="onnx-int8", cache_dir=cache)
    assert cached_export("all-MiniLM-L6-v2", "onnx-int8", cache) == first

    def read_only(folder: Path) -> Path:
        raise EmbeddingCacheError(f"{folder} is read-only")

    # A cache that cannot be written (a container image's) serves the export it holds.
    monkeypatch.setattr(embedding, "_writable_cache", read_only)
    assert cached_export("all-MiniLM-L6-v2", "onnx-int8", cache) == first
    with pytest.raises(EmbeddingCacheError, match="read-only"):
        cached_export("another-model", "onnx", cache)
    assert (first / "model.onnx").stat().st_mtime_ns == stamp
    assert embedder.embed_query("still works").shape == (384,)
    # One entry per backend, no temporary folders left behind.
    assert sorted(p.name.rsplit("-", 1)[0] for p in cache.iterdir()) == [
        "all-MiniLM-L6-v2-onnx",
        "all-MiniLM-L6-v2-onnx-int8",
        "all-MiniLM-L6-v2-openvino-int8",
    ]


def test_concurrent_first_use_exports_into_one_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    barrier, calls = threading.Barrier(2), []

    def fake_export(source: str, out: Path) -> None:
        calls.append(out)
        barrier.wait(timeout=10)  # both exports are in flight before either renames
        (out / embedding.ONNX_FILE).write_text(f"export {len(calls)}")
        (out / embedding.META_FILE).write_text("{}")

    monkeypatch.setattr(embedding, "_export_fp32", fake_export)
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(cached_export("m", "onnx", tmp_path)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(calls) == 2 and len(results) == 2 and results[0] == results[1]
    assert [p.name for p in tmp_path.iterdir()] == [results[0].name]
    assert (results[0] / embedding.ONNX_FILE).read_text() in {"export 1", "export 2"}


def test_backend_setting_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="'torch', 'onnx', 'onnx-int8' or 'openvino-int8'"):
        Settings(embedding_backend="tensorrt")
    monkeypatch.setenv("GROUNDED_EMBEDDING_BACKEND", "openvino")
    with pytest.raises(ValidationError, match="embedding_backend"):
        Settings()
    with pytest.raises(ValidationError, match="embedding_threads"):
        Settings(embedding_threads=0)
    with pytest.raises(ValueError, match="backend must be one of torch, onnx, onnx-int8, openvino"):
        SentenceTransformerEmbedder(backend="tensorrt")


def test_build_embedder_picks_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(
        ingest.build, "SentenceTransformerEmbedder", lambda m, **kw: seen.append(kw)
    )
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    build_embedder(Settings(embedding_threads=3))
    build_embedder(Settings(embedding_backend="onnx", embedding_device="cpu"))
    build_embedder(Settings(embedding_backend="torch"))
    # ONNX Runtime is used on CPU only: a GPU device keeps torch.
    build_embedder(Settings(embedding_backend="onnx-int8", embedding_device="cuda"))
    # Bulk ingest embeds documents on its own backend (the most chunks/s); unset = the query one.
    build_embedder(Settings(), documents=True)
    build_embedder(
        Settings(embedding_backend="onnx", ingest_embedding_backend=None), documents=True
    )
    build_embedder(Settings(embedding_device="cuda"), documents=True)
    assert [kw["backend"] for kw in seen] == [
        "onnx-int8",
        "onnx",
        "torch",
        "torch",
        "openvino-int8",
        "onnx",
        "torch",
    ]
    assert seen[0]["threads"] == 3


def test_an_unusable_cache_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(EmbeddingCacheError, match=f"cannot use {blocker}/sub .*CACHE_DIR"):
        SentenceTransformerEmbedder(backend="onnx", cache_dir=blocker / "sub")


def test_every_command_reports_an_unusable_cache_dir_without_a_traceback(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = grounded(
        "search",
        "hello",
        data_dir=tmp_path / "data",
        check_rc=1,
        env={"GROUNDED_EMBEDDING_CACHE_DIR": str(blocker / "sub")},
    )
    assert "error: cannot use" in proc.stderr and "GROUNDED_EMBEDDING_CACHE_DIR" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_openvino_calibration_is_part_of_the_cache_key(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other calibration passages give other int8 ranges: never the old export's vectors."""
    import ingest.openvino_backend as openvino_backend

    key = embedding._cache_key("m", "/nowhere", "openvino-int8")
    passages = openvino_backend.calibration_passages()
    assert len(passages) >= 64 and all(len(p.split()) >= 25 for p in passages)
    monkeypatch.setattr(openvino_backend, "calibration_passages", lambda: passages[:-1])
    assert embedding._cache_key("m", "/nowhere", "openvino-int8") != key
    assert embedding._cache_key("m", "/nowhere", "onnx-int8") == embedding._cache_key(
        "m", "/nowhere", "onnx-int8"
    )


def test_openvino_runs_concurrent_calls_side_by_side(cache: Path) -> None:
    """Each request thread gets its own infer request (one may serve one call at a time), and
    concurrent calls compute what a lone call does."""
    from concurrent.futures import ThreadPoolExecutor

    embedder = SentenceTransformerEmbedder(backend="openvino-int8", cache_dir=cache, threads=1)
    alone = [embedder.embed_query(s) for s in SENTENCES]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(embedder.embed_query, SENTENCES * 4))
    for i, vector in enumerate(together):
        np.testing.assert_allclose(vector, alone[i % len(SENTENCES)], atol=1e-5)


def test_an_openvino_export_that_strays_from_fp32_is_refused(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ingest.openvino_backend as openvino_backend

    folder = cached_export("all-MiniLM-L6-v2", "openvino-int8", cache)
    fp32 = cached_export("all-MiniLM-L6-v2", "onnx", cache) / embedding.ONNX_FILE
    embedder = SentenceTransformerEmbedder(backend="openvino-int8", cache_dir=cache)
    encoded = embedder.tokenizer(SENTENCES[1:3], padding=True, return_tensors="np")
    items = [
        {n: encoded[n].astype(np.int64) for n in ("input_ids", "attention_mask", "token_type_ids")}
    ]
    openvino_backend._check_agreement(folder, fp32, items)  # the default model agrees
    monkeypatch.setattr(openvino_backend, "MIN_MEAN_COSINE", 1.01)
    with pytest.raises(ValueError, match=r"strays from the fp32 model .*another embedding backend"):
        openvino_backend._check_agreement(folder, fp32, items)


def test_bulk_ingest_falls_back_to_the_query_backend_when_its_own_fails(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    built: list[str] = []

    def embedder(settings: Settings, backend: str) -> str:
        if backend == "openvino-int8":
            raise ValueError("the openvino-int8 export strays from the fp32 model")
        built.append(backend)
        return backend

    monkeypatch.setattr(ingest.build, "_embedder", embedder)
    with caplog.at_level(logging.WARNING, logger="ingest.build"):
        assert build_embedder(Settings(), documents=True) == "onnx-int8"  # type: ignore[comparison-overlap]
    assert "ingest_embedding_backend openvino-int8 failed (the openvino-int8 export" in caplog.text
    # a cache folder that cannot be used is not the backend's fault: it stays an error
    monkeypatch.setattr(
        ingest.build,
        "_embedder",
        lambda s, b: (_ for _ in ()).throw(EmbeddingCacheError("cannot use /x")),
    )
    with pytest.raises(EmbeddingCacheError):
        build_embedder(Settings(), documents=True)


def test_a_refused_openvino_export_is_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model the int8 recipe does not suit is refused once, not re-exported (~40 s) and
    refused again on every ingest; another model, or a changed one, gets its own key."""
    attempts: list[Path] = []

    def trace(source: str, out: Path, fuse: bool = True) -> None:
        (out / embedding.META_FILE).write_text("{}")

    def refuse(folder: Path) -> None:
        attempts.append(folder)
        raise embedding.ExportRefused("the openvino-int8 export strays from the fp32 model")

    monkeypatch.setattr(embedding, "_export_fp32", trace)
    monkeypatch.setattr(embedding, "_quantize_openvino", refuse)
    for _ in range(2):
        with pytest.raises(embedding.ExportRefused, match="strays from the fp32 model"):
            cached_export("all-MiniLM-L6-v2", "openvino-int8", tmp_path)
    assert len(attempts) == 1
    # nothing half-made is left beside the marker
    assert [p.suffix for p in tmp_path.iterdir()] == [".refused"]


def test_prepare_exports_makes_what_bulk_ingest_loads(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker makes its exports before its pool processes take tasks (tasks have a time
    limit); a refused one is left to build_embedder's fallback, an unusable cache is an error."""
    made: list[str] = []

    def export(model: str, backend: str, cache_dir: Path | None = None) -> Path:
        if backend == "openvino-int8":
            raise embedding.ExportRefused("the openvino-int8 export strays from the fp32 model")
        made.append(backend)
        return Path("/nowhere")

    monkeypatch.setattr(ingest.build, "cached_export", export)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="ingest.build"):
        ingest.build.prepare_exports(Settings())
    assert made == ["onnx-int8"] and "the openvino-int8 export failed" in caplog.text
    made.clear()
    ingest.build.prepare_exports(Settings(embedding_device="cuda"))  # a GPU runs torch
    ingest.build.prepare_exports(Settings(embedding_backend="torch", ingest_embedding_backend=None))
    assert made == []
    monkeypatch.setattr(
        ingest.build,
        "cached_export",
        lambda *a, **k: (_ for _ in ()).throw(EmbeddingCacheError("cannot use /x")),
    )
    with pytest.raises(EmbeddingCacheError):
        ingest.build.prepare_exports(Settings())
