"""``grounded tune ...`` and ``grounded export ...``: two command groups registered through the
``grounded.commands`` entry point (pyproject), like ``grounded eval``.

Example::

    grounded tune embeddings --dataset ../shared/datasets/scifact --out tuned/scifact-emb \\
        --report-split test
    grounded tune reranker --dataset ../shared/datasets/scifact --out tuned/scifact-ce
    grounded export finetune --format openai --from-suite xquad.en.json --limit 50 --out ft.jsonl
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ingest.index import IndexProblem
from ingest.settings import Settings
from service.cli_support import err, out
from service.pipeline import RagPipeline

from .datasets import DatasetError, load_beir

tune = typer.Typer(help="Fine-tune the embedding model or a reranker on your data.")
export = typer.Typer(help="Export training data for other tools (OpenAI fine-tuning).")

DatasetOpt = Annotated[
    Path | None, typer.Option("--dataset", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/")
]
PairsOpt = Annotated[
    Path | None,
    typer.Option("--pairs", help='JSONL of {"question", "passage"} pairs (instead of --dataset)'),
]
SplitOpt = Annotated[str, typer.Option(help="the BEIR qrels split to train on")]
OutOpt = Annotated[Path, typer.Option("--out", help="folder for the model and tuning.json")]
EpochsOpt = Annotated[int, typer.Option(help="at most this many epochs (early stopping)")]
BatchOpt = Annotated[int, typer.Option("--batch-size")]
LrOpt = Annotated[float, typer.Option("--lr", help="learning rate")]
DevShareOpt = Annotated[float, typer.Option(help="share of the questions held out as dev")]
DevMinOpt = Annotated[int, typer.Option(help="at least this many dev questions")]
SeedOpt = Annotated[int, typer.Option(help="seed of the dev split and of training")]
SkipOpt = Annotated[int, typer.Option(help="top non-positive hits skipped (likely unlabelled)")]
PatienceOpt = Annotated[int, typer.Option(help="epochs without a dev gain before stopping")]
MinGainOpt = Annotated[float, typer.Option(help="dev nDCG@10 gain needed to keep the model")]
KeepRejectedOpt = Annotated[
    bool, typer.Option(help="save a model that lost on dev to OUT/rejected (never the default)")
]
ReportSplitOpt = Annotated[
    str | None,
    typer.Option(help="after selection, also report this split (e.g. test); never used to select"),
]
MaxLenOpt = Annotated[
    int | None, typer.Option(help="tokens per text while training (cheaper); default: the model's")
]
DevDepthOpt = Annotated[int, typer.Option(help="base hybrid hits per dev question scored on dev")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the report as JSON")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir")]


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def _log(message: str) -> None:
    err.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}", highlight=False)


def _open_pipeline(data_dir: Path | None) -> RagPipeline:
    settings = Settings(data_dir=data_dir) if data_dir else Settings()
    try:
        return RagPipeline.from_settings(settings)
    except IndexProblem as exc:
        raise _fail(str(exc), 1) from None


def _load_pairs(dataset: Path | None, pairs: Path | None, split: str) -> Any:
    from .tuning.data import load_beir_pairs, load_jsonl_pairs

    if (dataset is None) == (pairs is None):
        raise _fail("give exactly one of --dataset (BEIR folder) or --pairs (JSONL)")
    try:
        return load_beir_pairs(dataset, split) if dataset else load_jsonl_pairs(pairs)  # type: ignore[arg-type]
    except (DatasetError, ValueError, KeyError) as exc:
        raise _fail(str(exc)) from None


def _config(**values: Any) -> Any:
    from .tuning.common import TuneConfig

    try:
        return TuneConfig(**values)
    except ValueError as exc:
        raise _fail(str(exc)) from None


def _report_splits(dataset: Path, dev_ids: list[str], train_split: str, split: str | None) -> Any:
    """The held-out dev questions (full corpus) and, for reporting only, ``split``."""
    from .tuning.common import subset

    train = load_beir(dataset, train_split)
    splits = {"dev": subset(train, dev_ids, "dev")}
    if split:
        splits[split] = load_beir(dataset, split)
    return splits


@tune.command()
def embeddings(
    out_dir: OutOpt,
    dataset: DatasetOpt = None,
    pairs: PairsOpt = None,
    split: SplitOpt = "train",
    epochs: EpochsOpt = 3,
    batch_size: BatchOpt = 32,
    lr: LrOpt = 2e-5,
    dev_share: DevShareOpt = 0.15,
    dev_min: DevMinOpt = 20,
    seed: SeedOpt = 13,
    skip: SkipOpt = 2,
    patience: PatienceOpt = 1,
    min_gain: MinGainOpt = 0.0,
    max_seq_length: MaxLenOpt = None,
    dev_depth: DevDepthOpt = 10,
    pool_extra: Annotated[
        int, typer.Option(help="other corpus documents added to the dev pool")
    ] = 300,
    keep_rejected: KeepRejectedOpt = False,
    reindex: Annotated[
        str | None,
        typer.Option(help="when kept, ingest the corpus with the tuned model into this collection"),
    ] = None,
    report_split: ReportSplitOpt = None,
    as_json: JsonOpt = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Fine-tune the embedding model (MultipleNegativesRankingLoss, mined hard negatives); keep
    it only if it beats the base model on a held-out dev split."""
    from .tuning.embeddings import compare_splits, tune_embeddings, tuned_pipeline

    data = _load_pairs(dataset, pairs, split)
    config = _config(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=lr,
        dev_share=dev_share,
        dev_min=dev_min,
        seed=seed,
        skip=skip,
        patience=patience,
        min_gain=min_gain,
        max_seq_length=max_seq_length,
        dev_depth=dev_depth,
        pool_extra=pool_extra,
    )
    if report_split and dataset is None:
        raise _fail("--report-split needs --dataset (a BEIR folder with that split)")
    pipeline = _open_pipeline(data_dir)
    try:
        result = tune_embeddings(
            pipeline, data, out_dir, config, keep_rejected=keep_rejected, log=_log
        )
        report = result.report
        model = result.model_dir or result.rejected_dir
        if report_split and dataset is not None and model is not None:
            splits = _report_splits(dataset, result.prepared.dev_ids, split, report_split)
            tuned = tuned_pipeline(pipeline, model)
            started = time.perf_counter()
            report["ndcg@10"] = compare_splits(pipeline, tuned, splits, _log)
            report["timings"]["report_s"] = round(time.perf_counter() - started, 1)
        if reindex and result.model_dir is None:
            _log(f"not re-indexing into {reindex!r}: the base model was kept")
        if result.model_dir is not None and reindex:
            tuned = tuned_pipeline(pipeline, result.model_dir)
            _log(f"re-indexing {len(data.documents)} documents into {reindex!r}")
            tuned.ingest(data.documents, reindex)
            report["reindexed"] = reindex
        from .tuning.common import write_report

        write_report(out_dir, report)
    except (DatasetError, IndexProblem, ValueError) as exc:
        raise _fail(str(exc)) from None
    finally:
        pipeline.close()
    _print(report)
    if as_json:
        out.print_json(json.dumps(report))


def _print(report: dict[str, Any]) -> None:
    err.print(report["verdict"], highlight=False)
    for label, splits in report.get("ndcg@10", {}).items():
        for split, modes in splits.items():
            cells = ", ".join(f"{m} {v:.4f}" for m, v in modes.items())
            err.print(f"  {label:5} {split:5} nDCG@10: {cells}", highlight=False)
    if report.get("model"):
        key = (
            "GROUNDED_EMBEDDING_MODEL"
            if report["kind"] == "embeddings"
            else ("GROUNDED_RERANKER=cross-encoder GROUNDED_RERANKER_MODEL")
        )
        err.print(f"use it: {key}={report['model']}", highlight=False)
    else:
        err.print("no model written as default (kept base)", highlight=False)


@tune.command()
def reranker(
    out_dir: OutOpt,
    dataset: DatasetOpt = None,
    pairs: PairsOpt = None,
    split: SplitOpt = "train",
    base_model: Annotated[
        str | None,
        typer.Option(help="cross-encoder to start from; default: the embedding model's backbone"),
    ] = None,
    epochs: EpochsOpt = 2,
    batch_size: BatchOpt = 32,
    lr: LrOpt = 2e-5,
    dev_share: DevShareOpt = 0.15,
    dev_min: DevMinOpt = 20,
    seed: SeedOpt = 13,
    skip: SkipOpt = 2,
    negatives: Annotated[int, typer.Option(help="hard negatives per question")] = 4,
    patience: PatienceOpt = 1,
    min_gain: MinGainOpt = 0.0,
    max_seq_length: MaxLenOpt = None,
    dev_depth: DevDepthOpt = 20,
    keep_rejected: KeepRejectedOpt = False,
    as_json: JsonOpt = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Train a cross-encoder reranker on the same pairs; it is kept only if reranking beats the
    hybrid order (and the base cross-encoder, if given) on the dev split."""
    from .tuning.reranker import tune_reranker

    data = _load_pairs(dataset, pairs, split)
    config = _config(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=lr,
        dev_share=dev_share,
        dev_min=dev_min,
        seed=seed,
        skip=skip,
        negatives=negatives,
        patience=patience,
        min_gain=min_gain,
        max_seq_length=max_seq_length,
        dev_depth=dev_depth,
    )
    pipeline = _open_pipeline(data_dir)
    try:
        result = tune_reranker(
            pipeline,
            data,
            out_dir,
            config,
            base_model=base_model,
            keep_rejected=keep_rejected,
            log=_log,
        )
    except (DatasetError, IndexProblem, ValueError, OSError) as exc:
        raise _fail(str(exc)) from None
    finally:
        pipeline.close()
    _print(result.report)
    if as_json:
        out.print_json(json.dumps(result.report))


@export.command()
def finetune(
    out_file: Annotated[Path, typer.Option("--out", help="the chat JSONL to write")],
    fmt: Annotated[str, typer.Option("--format", help="only openai (chat JSONL)")] = "openai",
    from_suite: Annotated[
        Path | None,
        typer.Option(help="answers suite (SQuAD JSON, or JSONL with --corpus) answered now"),
    ] = None,
    corpus: Annotated[Path | None, typer.Option(help="corpus JSONL for a JSONL suite")] = None,
    from_pairs: Annotated[
        Path | None, typer.Option(help='JSONL of {"question", "answer"[, "contexts"]}')
    ] = None,
    collection: Annotated[
        str | None, typer.Option(help="where --from-pairs rows without contexts retrieve them")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="only the first N questions")] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="chunks retrieved per question")] = 5,
    min_f1: Annotated[float, typer.Option(help="token F1 that accepts an answer")] = 0.5,
    context_limit: Annotated[
        int, typer.Option(help="tokens per training example allowed by the target model")
    ] = 65_536,
    as_json: JsonOpt = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Chat-format JSONL for OpenAI fine-tuning (the service's own prompt, the accepted answer
    with [n] citations), validated against OpenAI's format, with token counts."""
    from .finetune_export import (
        examples_from_pairs,
        examples_from_suite,
        export_openai,
        load_qa_pairs,
        token_counter,
        validate_chat_jsonl,
    )

    if fmt != "openai":
        raise _fail(f"unknown format {fmt!r}: only openai is supported")
    if (from_suite is None) == (from_pairs is None):
        raise _fail("give exactly one of --from-suite or --from-pairs")
    pipeline = _open_pipeline(data_dir)
    try:
        if from_suite is not None:
            from .answers import load_answer_suite
            from .hallucination import HallucinationDetector
            from .retrieval import index_corpus

            try:
                suite = load_answer_suite(from_suite, corpus).limited(limit)
            except (OSError, ValueError, KeyError) as exc:
                raise _fail(f"cannot load {from_suite}: {exc}") from None
            if not suite.corpus:
                raise _fail("no corpus: pass --corpus for a JSONL suite")
            _log(f"indexing {len(suite.corpus)} documents (cached after the first run)")
            suite_collection, _ = index_corpus(pipeline, suite.name, from_suite, suite.corpus)
            _log(f"answering {len(suite.items)} questions ({pipeline.generator_name})")
            examples = examples_from_suite(
                pipeline,
                suite,
                suite_collection,
                top_k=top_k,
                min_f1=min_f1,
                detector=HallucinationDetector(pipeline.embedder),
            )
        else:
            assert from_pairs is not None
            try:
                rows = load_qa_pairs(from_pairs)[:limit] if limit else load_qa_pairs(from_pairs)
            except (OSError, ValueError) as exc:
                raise _fail(str(exc)) from None
            examples = examples_from_pairs(pipeline, rows, collection, top_k=top_k)
        started = time.perf_counter()
        stats = export_openai(examples, out_file)
        elapsed = time.perf_counter() - started
        validation = validate_chat_jsonl(out_file, token_counter(pipeline.counter), context_limit)
    except (IndexProblem, ValueError) as exc:
        raise _fail(str(exc)) from None
    finally:
        pipeline.close()
    report = {
        "file": str(out_file),
        "generator": pipeline.generator_name,
        **stats.to_dict(),
        "seconds": round(elapsed, 1),
        "validation": validation.to_dict(),
    }
    _print_export(report)
    if as_json:
        out.print_json(json.dumps(report))
    if not validation.ok:
        raise typer.Exit(1)


@export.command("validate")
def validate_file(
    path: Annotated[Path, typer.Argument(help="chat JSONL file")],
    context_limit: Annotated[int, typer.Option(help="tokens per example allowed")] = 65_536,
    as_json: JsonOpt = False,
) -> None:
    """Check a chat fine-tuning file against OpenAI's format; exit 1 when it is invalid."""
    from service.tokens import HuggingFaceTokenCounter

    from .finetune_export import token_counter, validate_chat_jsonl

    if not path.is_file():
        raise _fail(f"{path} is not a file")
    from ingest.embedding import resolve_model_path

    model = Settings().embedding_model
    fallback = HuggingFaceTokenCounter(
        resolve_model_path(model), margin=1.25, name=f"{model} (+25% margin)"
    )
    validation = validate_chat_jsonl(path, token_counter(fallback), context_limit)
    report = {"file": str(path), "validation": validation.to_dict()}
    _print_export(report)
    if as_json:
        out.print_json(json.dumps(report))
    if not validation.ok:
        raise typer.Exit(1)


def _print_export(report: dict[str, Any]) -> None:
    v = report["validation"]
    if "written" in report:
        err.print(
            f"{report['written']} of {report['considered']} examples written to {report['file']}"
            f" (generator {report['generator']}); skipped: {report['skipped'] or 'none'}",
            highlight=False,
        )
    t = v["tokens"]
    err.print(
        f"{'valid' if v['ok'] else 'INVALID'}: {v['examples']} examples; tokens ({t['counter']}) "
        f"total {t['total']}, mean {t['mean']}, max {t['max']}; "
        f"{v['over_limit']} over {v['context_limit']}",
        highlight=False,
    )
    for problem in v["errors"]:
        err.print(f"  {problem}", highlight=False)
