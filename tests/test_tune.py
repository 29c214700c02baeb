"""grounded tune: the dev split, hard negatives, the keep-only-if-better rule (both ways) with
real training of a tiny BERT built here, and the commands' errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.tiny_models import save_tiny_bert
from typer.testing import CliRunner

import eval.tuning.embeddings as embeddings_module
from eval.datasets import DatasetError
from eval.tune_cli import tune
from eval.tuning.common import TuneConfig, read_report
from eval.tuning.data import TrainingData, load_jsonl_pairs, split_dev
from eval.tuning.embeddings import tune_embeddings, tuned_pipeline
from eval.tuning.mining import hard_negatives
from eval.tuning.reranker import tune_reranker
from eval.tuning.selection import BestEpoch, keep
from ingest.documents import Document
from ingest.settings import Settings
from service.pipeline import RagPipeline

WORDS = [
    "zebra",
    "volcano",
    "piano",
    "glacier",
    "lantern",
    "orchid",
    "falcon",
    "copper",
    "meadow",
    "harbor",
    "walnut",
    "comet",
    "tundra",
    "violin",
    "cactus",
    "marble",
    "pepper",
    "saddle",
    "canyon",
    "lobster",
    "parrot",
    "quartz",
    "tulip",
    "anchor",
    "bamboo",
    "cobalt",
    "dolphin",
    "ember",
    "fjord",
    "garnet",
]


@pytest.fixture(autouse=True)
def own_export_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX exports of this module's throwaway models go to the test's folder, not the user's
    cache (each model path is new, so each would leave an entry there)."""
    monkeypatch.setenv("GROUNDED_EMBEDDING_CACHE_DIR", str(tmp_path / "exports"))


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer BERT saved as a sentence-transformers folder (mean
    pooling), with MiniLM's tokenizer: small enough to train in seconds."""
    from sentence_transformers import SentenceTransformer

    raw = save_tiny_bert(tmp_path_factory.mktemp("tiny-bert-raw"), max_positions=128)
    path = tmp_path_factory.mktemp("tiny-bert")
    SentenceTransformer(str(raw), device="cpu").save_pretrained(str(path))
    return path


def toy_data() -> TrainingData:
    """One passage per topic word; each question names its topic once among filler words."""
    docs = [
        Document(f"d{i}", f"Notes on the {w}: the {w} is described here, with {w} facts.", "")
        for i, w in enumerate(WORDS)
    ]
    queries = {f"q{i}": f"tell me what is known about the {w} please" for i, w in enumerate(WORDS)}
    positives = {f"q{i}": [f"d{i}"] for i in range(len(WORDS))}
    return TrainingData("toy", Path("/toy/corpus"), queries, positives, docs)


def pipeline_for(model: Path, data_dir: Path) -> RagPipeline:
    settings = Settings(
        data_dir=data_dir, embedding_model=str(model), chunk_size=64, chunk_overlap=8
    )
    return RagPipeline.from_settings(settings)


# The dev split ----------------------------------------------------------------------------------
def test_dev_split_is_seeded_disjoint_and_order_free() -> None:
    ids = [f"q{i}" for i in range(100)]
    train, dev = split_dev(ids, share=0.15, minimum=20, seed=7)
    assert len(dev) == 20  # the minimum wins over 15 %
    assert not set(train) & set(dev) and set(train) | set(dev) == set(ids)
    assert split_dev(list(reversed(ids)), share=0.15, minimum=20, seed=7) == (train, dev)
    assert split_dev(ids, share=0.15, minimum=20, seed=8)[1] != dev
    assert len(split_dev(ids * 1, share=0.3, minimum=5, seed=7)[1]) == 30


def test_dev_split_refuses_too_few_questions() -> None:
    with pytest.raises(DatasetError, match="too few"):
        split_dev(["a", "b", "c"], share=0.5, minimum=2)
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_dev(["a", "b", "c"], share=1.5)


# Hard negatives ---------------------------------------------------------------------------------
def test_hard_negatives_exclude_positives_and_skip_the_closest() -> None:
    rankings = {"q1": ["p1", "a", "p2", "b", "c", "d"], "q2": ["x"]}
    positives = {"q1": ["p1", "p2"], "q2": ["x"]}
    assert hard_negatives(rankings, positives, skip=1, per_query=2) == {"q1": ["b", "c"], "q2": []}
    assert hard_negatives(rankings, positives, skip=0, per_query=1) == {"q1": ["a"], "q2": []}
    with pytest.raises(ValueError):
        hard_negatives(rankings, positives, skip=-1)


def test_mined_negatives_never_include_a_positive(tmp_path: Path, tiny_bert: Path) -> None:
    from eval.tuning.common import prepare

    data = toy_data()
    # several positives per question make the exclusion matter
    data.positives = {
        q: [d, f"d{(int(d[1:]) + 1) % len(WORDS)}"] for q, [d] in data.positives.items()
    }
    pipeline = pipeline_for(tiny_bert, tmp_path)
    try:
        prepared = prepare(
            pipeline,
            data,
            TuneConfig(dev_share=0.2, dev_min=5, skip=0, negatives=3, depth=10),
            lambda _m: None,
        )
    finally:
        pipeline.close()
    assert set(prepared.negatives) == set(prepared.train_ids)
    assert all(prepared.negatives.values())
    for q, negatives in prepared.negatives.items():
        assert not set(negatives) & set(data.positives[q])


# The keep rule ----------------------------------------------------------------------------------
def test_keep_rule_needs_a_strict_gain() -> None:
    assert keep(0.50, 0.51)
    assert not keep(0.50, 0.50)
    assert not keep(0.50, 0.40)
    assert not keep(0.50, 0.51, min_gain=0.02)


def test_best_epoch_restores_the_best_weights_and_stops_early() -> None:
    import torch

    model = torch.nn.Linear(1, 1)
    scores = iter([0.4, 0.6, 0.5])
    weights: list[float] = []

    class Control:
        should_training_stop = False

    watch = BestEpoch(model, lambda m: next(scores), base=0.5, patience=1)
    control = Control()
    for _epoch in range(3):
        if control.should_training_stop:
            break
        with torch.no_grad():
            model.weight.fill_(float(len(weights)))
        weights.append(float(model.weight.detach()))
        watch.on_epoch_end(None, None, control)
    outcome = watch.finish()
    assert (outcome.best_epoch, outcome.best_dev, outcome.kept) == (2, 0.6, True)
    assert float(model.weight.detach()) == weights[1]  # epoch 2's weights are back
    assert control.should_training_stop  # epoch 3 was worse: patience 1 stops
    assert [h["epoch"] for h in outcome.history] == [0, 1, 2, 3]


def run_tune(tiny_bert: Path, tmp_path: Path, **config: Any) -> Any:
    pipeline = pipeline_for(tiny_bert, tmp_path / "index")
    try:
        return tune_embeddings(
            pipeline,
            toy_data(),
            tmp_path / "out",
            TuneConfig(dev_share=0.25, dev_min=6, batch_size=8, depth=8, dev_depth=5, **config),
        )
    finally:
        pipeline.close()


def test_model_that_beats_base_on_dev_is_kept_and_reindexes(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Real training, scripted dev scores: base 0.2, then 0.3 (the rule, not the learning, is
    # under test here; the next test trains a model that really loses).
    scores = iter([0.2, 0.3])
    monkeypatch.setattr(
        embeddings_module, "dense_dev_scorer", lambda *a, **k: lambda model: next(scores)
    )
    result = run_tune(tiny_bert, tmp_path, epochs=1, learning_rate=1e-4)
    assert (result.outcome.best_epoch, result.outcome.kept) == (1, True)
    assert result.model_dir is not None and (result.model_dir / "config.json").is_file()
    report = read_report(result.model_dir)
    assert report is not None and report["kept"] and report["model"] == str(result.model_dir)
    assert report["dev_questions"] == len(report["dev_ids"]) == 8
    # re-indexing with the tuned model: a new collection whose manifest names the tuned model
    pipeline = pipeline_for(tiny_bert, tmp_path / "index")
    try:
        tuned = tuned_pipeline(pipeline, result.model_dir)
        tuned.ingest(toy_data().documents, "tuned")
        manifest = pipeline.index.manifest("tuned")
        assert manifest is not None and manifest.model == str(result.model_dir)
    finally:
        pipeline.close()


def test_model_worse_than_base_is_not_kept(tiny_bert: Path, tmp_path: Path) -> None:
    # A learning rate this large wrecks the weights: the tuned model loses on dev.
    result = run_tune(tiny_bert, tmp_path, epochs=1, learning_rate=50.0)
    assert result.outcome.best_dev < result.outcome.base_dev
    assert not result.outcome.kept and result.model_dir is None
    assert not (tmp_path / "out" / "model").exists()
    report = json.loads((tmp_path / "out" / "tuning.json").read_text())
    assert report["kept"] is False and report["model"] is None
    assert "kept base" in report["verdict"]


def test_reranker_that_loses_on_dev_is_never_written_as_model(
    tiny_bert: Path, tmp_path: Path
) -> None:
    pipeline = pipeline_for(tiny_bert, tmp_path / "index")
    try:
        result = tune_reranker(
            pipeline,
            toy_data(),
            tmp_path / "out",
            TuneConfig(
                dev_share=0.25,
                dev_min=6,
                batch_size=8,
                depth=8,
                dev_depth=5,
                epochs=1,
                learning_rate=50.0,
                negatives=2,
            ),
            keep_rejected=True,
        )
    finally:
        pipeline.close()
    assert not result.outcome.kept
    assert result.model_dir is None and not (tmp_path / "out" / "model").exists()
    assert result.rejected_dir is not None and (result.rejected_dir / "config.json").is_file()
    assert read_report(result.rejected_dir)["kept"] is False  # type: ignore[index]


# Input and commands -----------------------------------------------------------------------------
def test_jsonl_pairs_group_questions_and_reject_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        '{"question": "q one", "passage": "alpha"}\n\n'
        '{"question": "q one", "passage": "beta"}\n'
        '{"question": "q two", "passage": "alpha"}\n'
    )
    data = load_jsonl_pairs(path)
    assert len(data.queries) == 2 and len(data.documents) == 2
    assert sorted(len(p) for p in data.positives.values()) == [1, 2]
    path.write_text('{"question": "q"}\n')
    with pytest.raises(DatasetError, match=r"pairs\.jsonl:1"):
        load_jsonl_pairs(path)


def test_tune_command_errors_are_clear(tmp_path: Path) -> None:
    def run(*args: str) -> Any:
        return CliRunner().invoke(tune, list(args))

    result = run("embeddings", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "exactly one of --dataset" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    result = run("reranker", "--pairs", str(bad), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "bad.jsonl:1" in result.output
    result = run("embeddings", "--dataset", str(tmp_path / "nowhere"), "--out", str(tmp_path))
    assert result.exit_code == 2 and "corpus.jsonl" in result.output
    result = run("embeddings", "--pairs", str(bad), "--out", str(tmp_path), "--epochs", "0")
    assert result.exit_code == 2


def test_ladder_rows_for_tuned_models_carry_the_dev_verdict(
    tiny_bert: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from eval.datasets import load_beir
    from eval.ladder import run_ladder
    from eval.tuning.common import write_report

    # a "rejected" cross-encoder folder as grounded tune writes it: OUT/rejected + OUT/tuning.json
    ce = tmp_path / "ce" / "rejected"
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=32,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(ce)
    tokenizer.save_pretrained(ce)
    write_report(ce.parent, {"kept": False, "base_dev_ndcg@10": 0.7, "best_dev_ndcg@10": 0.6})
    data = load_beir(Path(__file__).parent / "fixtures" / "mini_beir")
    pipeline = pipeline_for(tiny_bert, tmp_path / "index")
    try:
        rows = run_ladder(pipeline, data, tuned_embeddings=tiny_bert, tuned_reranker=ce)
    finally:
        pipeline.close()
    by_name = {r.name: r for r in rows}
    embedded, reranked = by_name["+tuned-embeddings"], by_name["+tuned-reranker"]
    assert embedded.metrics and embedded.delta is not None
    assert "no tuning.json" in embedded.description
    assert reranked.metrics and "REJECTED on dev" in reranked.description
