"""``grounded eval ...`` commands, registered through the ``grounded.commands`` entry point."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ingest.index import IndexProblem
from ingest.settings import DEFAULT_REPORTS_DIR, Settings
from service.cli_support import err, out
from service.pipeline import RagPipeline

from .datasets import BeirDataset, DatasetError, load_beir
from .metrics import METRICS
from .retrieval import MODES, evaluate_retrieval, prepare_index

app = typer.Typer(help="Measure retrieval and answers on your own data.", no_args_is_help=True)


def _progress(disable: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=disable,
    )


@app.command()
def retrieval(
    dataset: Annotated[
        Path, typer.Option("--dataset", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/")
    ],
    mode: Annotated[str, typer.Option(help=f"all, or one of: {', '.join(MODES)}")] = "all",
    split: Annotated[str, typer.Option(help="qrels split (dev falls back to train)")] = "test",
    limit: Annotated[int | None, typer.Option(help="only the first N judged queries")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
) -> None:
    """nDCG@10, Recall@10/@100, MRR@10 and MAP per retrieval mode (pytrec_eval)."""
    modes = list(MODES) if mode == "all" else [mode]
    if any(m not in MODES for m in modes):
        err.print(f"[red]error:[/red] unknown mode {mode!r}; use all or one of {', '.join(MODES)}")
        raise typer.Exit(2)
    try:
        data = load_beir(dataset, split).limited(limit)
    except DatasetError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    pipeline = _open_pipeline(data_dir)
    settings = pipeline.settings
    try:
        with _progress(as_json or not err.is_terminal) as progress:
            task = progress.add_task(f"indexing {data.name}", total=len(data.corpus))
            collection, _ = prepare_index(
                pipeline, data, lambda d, _c: progress.update(task, completed=d)
            )
            task = progress.add_task("querying", total=len(data.queries) * len(modes))
            report = evaluate_retrieval(
                pipeline, data, modes, collection, tick=lambda n: progress.advance(task, n)
            )
    finally:
        pipeline.close()
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "dataset": data.name,
                    "split": data.split,
                    "model": settings.embedding_model,
                    "modes": report,
                }
            )
        )
        return
    table = Table(
        title=f"{data.name} ({len(data.queries)} queries, {data.split}), {settings.embedding_model}"
    )
    table.add_column("mode")
    for metric in (*METRICS, "ndcg@10 95% CI", "latency_p50_ms"):
        table.add_column(metric, justify="right")
    for name, scores in report.items():
        table.add_row(
            name,
            *(f"{scores[m]:.4f}" for m in METRICS),
            f"{scores['ndcg@10_low']:.4f}–{scores['ndcg@10_high']:.4f}",
            f"{scores['latency_p50_ms']:.1f}",
        )
    out.print(table)


@app.command()
def detector(
    dataset: Annotated[Path, typer.Option("--dataset", help="HaluEval qa_data.json (JSON Lines)")],
    limit: Annotated[
        int | None, typer.Option(help="only the first N rows (2 answers each)")
    ] = 2000,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Balanced accuracy, F1 and AUROC of the offline hallucination detector, held out."""
    from ingest.build import build_embedder

    from .detector import load_halueval_qa, validate_detector
    from .hallucination import HallucinationDetector

    if not dataset.is_file():
        err.print(f"[red]error:[/red] {dataset} is not a file")
        raise typer.Exit(2)
    rows = len(load_halueval_qa(dataset, limit))
    hd = HallucinationDetector(build_embedder(Settings()))
    with _progress(as_json or not err.is_terminal) as progress:
        task = progress.add_task("scoring answers", total=rows)
        report = validate_detector(hd, dataset, limit, tick=lambda n: progress.advance(task, n))
    if as_json:
        out.print_json(json.dumps(report))
        return
    table = Table(title=f"hallucination detector on {dataset.name} ({report['rows']} rows)")
    for column in ("split", "answers", "balanced acc.", "F1", "AUROC"):
        table.add_column(column, justify="right")
    for split in ("calibration", "held_out"):
        r = report[split]
        table.add_row(
            split,
            str(r["answers"]),
            f"{r['balanced_accuracy']:.4f}",
            f"{r['f1']:.4f}",
            f"{r['auroc']:.4f}",
        )
    out.print(table)
    out.print(f"threshold chosen on the calibration split only: score > {report['threshold']}")


@app.command()
def ladder(
    dataset: Annotated[Path, typer.Option("--dataset", help="BEIR folder")],
    chunk_sizes: Annotated[str, typer.Option(help="comma-separated chunk-size variants")] = "128",
    limit: Annotated[int | None, typer.Option(help="only the first N judged queries")] = None,
    split: Annotated[str, typer.Option(help="qrels split (dev falls back to train)")] = "test",
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="report folder; default: <reports_dir>/ladder-<dataset>"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
    tuned_embeddings: Annotated[Path | None, typer.Option(help="grounded tune model")] = None,
    tuned_reranker: Annotated[Path | None, typer.Option(help="grounded tune model")] = None,
) -> None:
    """The optimization ladder: table (markdown, JSON), chart (PNG) and HTML report."""
    from .ladder import ladder_markdown, run_ladder, write_ladder_report

    try:
        sizes = [int(s) for s in chunk_sizes.split(",") if s.strip()]
        data = load_beir(dataset, split).limited(limit)
    except (ValueError, DatasetError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    pipeline = _open_pipeline(data_dir)
    # Where the API lists reports (GROUNDED_REPORTS_DIR), so the playground shows this one.
    reports_dir = pipeline.settings.reports_dir or DEFAULT_REPORTS_DIR
    try:
        with _progress(as_json or not err.is_terminal) as progress:
            tasks: dict[str, TaskID] = {}

            def indexed(label: str, done: int) -> None:
                if label not in tasks:
                    tasks[label] = progress.add_task(f"indexing ({label})", total=len(data.corpus))
                progress.update(tasks[label], completed=done)

            rungs = 4 + len([s for s in sizes if s != pipeline.settings.chunk_size])
            task = progress.add_task("querying", total=rungs * len(data.queries))
            rows = run_ladder(
                pipeline,
                data,
                sizes,
                lambda n: progress.advance(task, n),
                indexed,
                tuned_embeddings,
                tuned_reranker,
            )
    finally:
        pipeline.close()
    paths = write_ladder_report(rows, out_dir or reports_dir / f"ladder-{data.name}", data.name)
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "rows": [r.to_dict() for r in rows],
                    "files": {k: str(v) for k, v in paths.items()},
                }
            )
        )
        return
    out.print(ladder_markdown(rows))
    out.print("written: " + ", ".join(str(p) for p in paths.values()))


def _open_pipeline(data_dir: Path | None) -> RagPipeline:
    settings = Settings(data_dir=data_dir) if data_dir else Settings()
    try:
        return RagPipeline.from_settings(settings)
    except IndexProblem as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


@app.command()
def nightly(
    config: Annotated[Path, typer.Option("--config", help="YAML: results_dir and suites")],
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
) -> None:
    """Run the configured suites, store the run, write the HTML report; exit 1 on a regression."""
    from pydantic import ValidationError

    from .nightly import NightlyConfig, Suite, run_nightly

    try:
        cfg = NightlyConfig.load(config)
    except (OSError, ValidationError, ValueError) as exc:
        err.print(f"[red]error:[/red] invalid nightly config {config}: {exc}")
        raise typer.Exit(2) from None
    pipeline = _open_pipeline(data_dir)
    try:
        with _progress(not err.is_terminal) as progress:

            def ticker(suite: Suite) -> Callable[[int], None]:
                task = progress.add_task(f"{suite.name} ({suite.kind})", total=None)
                return lambda n: progress.advance(task, n)

            passed, report, gates = run_nightly(
                cfg, pipeline, log=lambda m: progress.console.print(m), ticker=ticker
            )
    except (DatasetError, FileNotFoundError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    finally:
        pipeline.close()
    table = Table("metric", "value", "floor", "baseline", "gate")
    for g in gates:
        table.add_row(
            g.metric,
            "" if g.value is None else f"{g.value:.4f}",
            "" if g.floor is None else f"{g.floor:.4f}",
            "" if g.baseline is None else f"{g.baseline:.4f}",
            "[green]ok[/green]" if g.ok else f"[red]{g.reason}[/red]",
        )
    out.print(table)
    out.print(f"{'PASSED' if passed else 'FAILED'}; report: {report}")
    if not passed:
        raise typer.Exit(1)


@app.command()
def answers(
    dataset: Annotated[
        Path, typer.Option("--dataset", help="SQuAD-format JSON, or JSONL questions")
    ],
    corpus: Annotated[
        Path | None, typer.Option(help="corpus JSONL for a JSONL question file")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="only the first N questions")] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="chunks retrieved per question")] = 5,
    judge_url: Annotated[
        str | None, typer.Option(help="judge LLM base URL (env GROUNDED_JUDGE_BASE_URL)")
    ] = None,
    judge_model: Annotated[
        str | None, typer.Option(help="judge model (env GROUNDED_JUDGE_MODEL)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
) -> None:
    """Answers through the full pipeline: EM/F1, id context precision/recall, unsupported claims,
    and ragas metrics when a judge LLM is configured."""
    from .answers import evaluate_answers, load_answer_suite
    from .hallucination import HallucinationDetector
    from .judge import JudgeConfig, RagasJudge
    from .retrieval import index_corpus

    try:
        suite = load_answer_suite(dataset, corpus).limited(limit)
    except (OSError, ValueError, KeyError) as exc:
        err.print(f"[red]error:[/red] cannot load {dataset}: {exc}")
        raise typer.Exit(2) from None
    if not suite.corpus:
        err.print("[red]error:[/red] no corpus: pass --corpus for a JSONL question file")
        raise typer.Exit(2)
    pipeline = _open_pipeline(data_dir)
    s = pipeline.settings
    url, model = judge_url or s.judge_base_url, judge_model or s.judge_model
    judge = None
    if url and model:
        key = s.judge_api_key.get_secret_value() if s.judge_api_key else "not-needed"
        judge = RagasJudge(JudgeConfig(url, model, key, s.judge_timeout), pipeline.embedder)
    try:
        with _progress(as_json or not err.is_terminal) as progress:
            task = progress.add_task(f"indexing {suite.name}", total=len(suite.corpus))
            collection, _ = index_corpus(
                pipeline,
                suite.name,
                dataset,
                suite.corpus,
                lambda d, _c: progress.update(task, completed=d),
            )
            task = progress.add_task("answering", total=len(suite.items))
            summary, _records = evaluate_answers(
                pipeline,
                suite,
                collection,
                top_k=top_k,
                detector=HallucinationDetector(pipeline.embedder),
                judge=judge,
                tick=lambda n: progress.advance(task, n),
            )
    finally:
        pipeline.close()
    summary["judge"] = judge.config.describe() if judge else None
    if as_json:
        out.print_json(json.dumps({"dataset": suite.name, **summary}))
        return
    table = Table(
        title=f"answers: {suite.name} ({summary['questions']} questions, "
        f"generator {summary['generator']})"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if key not in ("generator", "judge"):
            table.add_row(key, "n/a" if value is None else f"{value}")
    out.print(table)
    out.print(f"judge: {summary['judge'] or 'none configured (ragas metrics skipped)'}")


DATASETS_HOME = Path("../shared/datasets")


@app.command("build-sets")
def build_sets(
    out_dir: Annotated[Path, typer.Option("--out", help="where the BEIR folders go")] = Path(
        "eval-data/beir"
    ),
    xquad: Annotated[Path, typer.Option(help="XQuAD/SQuAD-format JSON")] = DATASETS_HOME
    / "xquad_en"
    / "xquad.en.json",
    halueval: Annotated[Path, typer.Option(help="HaluEval qa_data.json (JSON Lines)")] = (
        DATASETS_HOME / "halueval" / "qa_data.json"
    ),
    halueval_rows: Annotated[int, typer.Option(help="HaluEval rows sampled")] = 3000,
    seed: Annotated[int, typer.Option(help="seed of the samples and splits")] = 14,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """BEIR folders (corpus, queries, qrels/dev.tsv and qrels/test.tsv) from XQuAD and HaluEval,
    deterministic for a given seed."""
    from .beir_build import build_halueval, build_xquad

    built = []
    for source in (xquad, halueval):
        if not source.is_file():
            err.print(f"[red]error:[/red] {source} is not a file")
            raise typer.Exit(2)
    built.append(build_xquad(xquad, out_dir, seed=seed))
    built.append(build_halueval(halueval, out_dir, rows=halueval_rows, seed=seed))
    if as_json:
        out.print_json(json.dumps([b.to_dict() for b in built]))
        return
    table = Table("set", "documents", "dev queries", "test queries", "folder")
    for b in built:
        table.add_row(
            b.name, str(b.documents), str(b.queries["dev"]), str(b.queries["test"]), str(b.path)
        )
    out.print(table)


def _load_sets(datasets: list[Path], split: str, limit: int | None) -> list[BeirDataset]:
    try:
        return [load_beir(d, split).limited(limit) for d in datasets]
    except DatasetError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command()
def compare(
    dataset: Annotated[
        list[Path], typer.Option("--dataset", help="BEIR folder; repeat for several sets")
    ],
    candidate: Annotated[
        list[str],
        typer.Option(
            "--candidate",
            help="settings to compare with today's, e.g. fusion=dbsf or "
            "chunk_size=128,rrf_k=20 or aggregation=max+0.1; repeatable",
        ),
    ],
    split: Annotated[str, typer.Option(help="qrels split (dev falls back to train)")] = "dev",
    limit: Annotated[int | None, typer.Option(help="only the first N judged queries")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
) -> None:
    """Today's defaults against candidate settings on several sets: one table of nDCG@10,
    deltas and the mean, and the candidate the selection rule picks."""
    from .compare import compare as run_compare
    from .compare import compare_markdown, parse_candidate, verdict

    try:
        # Checked before the model loads, so a typo fails at once.
        candidates = [parse_candidate(c) for c in candidate]
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    sets = _load_sets(dataset, split, limit)
    pipeline = _open_pipeline(data_dir)
    try:
        with _progress(as_json or not err.is_terminal) as progress:
            tasks: dict[str, TaskID] = {}

            def indexed(name: str, label: str, done: int) -> None:
                key = f"{name} ({label})"
                if key not in tasks:
                    total = next(len(s.corpus) for s in sets if s.name == name)
                    tasks[key] = progress.add_task(f"indexing {key}", total=total)
                progress.update(tasks[key], completed=done)

            task = progress.add_task("querying", total=None)
            report = run_compare(
                pipeline, sets, candidates, lambda n: progress.advance(task, n), indexed
            )
    finally:
        pipeline.close()
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    out.print(compare_markdown(report), markup=False)
    out.print("\n".join(verdict(report, split)), markup=False)


@app.command()
def abstention(
    dataset: Annotated[
        list[Path], typer.Option("--dataset", help="BEIR folder; at least two, repeatable")
    ],
    split: Annotated[str, typer.Option(help="qrels split (dev falls back to train)")] = "dev",
    floor: Annotated[
        float | None, typer.Option(help="report this floor (e.g. chosen on dev) as well")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="only the first N judged queries")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
) -> None:
    """False-abstention and false-answer rates of the similarity floor over a range of floors:
    each set's queries against its own corpus (answerable) and the others' (unanswerable)."""
    from .abstention import choose_floor, curve_markdown, default_floors, measure

    if len(dataset) < 2:
        err.print(
            "[red]error:[/red] give at least two --dataset: a set's questions asked against "
            "another set's corpus are the unanswerable ones"
        )
        raise typer.Exit(2)
    sets = _load_sets(dataset, split, limit)
    pipeline = _open_pipeline(data_dir)
    current = pipeline.settings.abstain_min_similarity
    try:
        with _progress(as_json or not err.is_terminal) as progress:
            tasks: dict[str, TaskID] = {}

            def indexed(name: str, done: int) -> None:
                if name not in tasks:
                    total = next(len(s.corpus) for s in sets if s.name == name)
                    tasks[name] = progress.add_task(f"indexing {name}", total=total)
                progress.update(tasks[name], completed=done)

            # each set's questions against every corpus, and once more without their answers
            task = progress.add_task(
                "querying", total=(len(sets) + 1) * sum(len(s.queries) for s in sets)
            )
            measured = measure(pipeline, sets, lambda n: progress.advance(task, n), indexed)
    finally:
        pipeline.close()
    floors = sorted({*default_floors(), *(f for f in (floor, current) if f is not None)})
    curve = measured.rates(floors)
    chosen = choose_floor(curve)
    at = {r.floor: r for r in curve}
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "split": [s.split for s in sets],
                    "datasets": [s.name for s in sets],
                    "chosen_by_rule": chosen.to_dict(),
                    "requested": at[floor].to_dict() if floor is not None else None,
                    "current_default": at[current].to_dict() if current is not None else None,
                    "curve": [r.to_dict() for r in curve],
                }
            )
        )
        return
    out.print(curve_markdown(curve, chosen.floor), markup=False)
    out.print(
        f"rule: least false-abstention + false-answer; on this split it picks {chosen.floor} "
        f"(false abstention {chosen.false_abstention:.4f}, false answer {chosen.false_answer:.4f}; "
        f"on topic, with the answer removed, {chosen.false_answer_on_topic:.4f})",
        markup=False,
    )
    for label, value in (("requested", floor), ("current default", current)):
        if value is not None:
            r = at[value]
            out.print(f"{label} floor {value}: " + json.dumps(r.to_dict()), markup=False)


@app.command("sql")
def sql_ladder(
    dataset: Annotated[
        Path, typer.Option("--dataset", help="Spider folder: dev.json, database/<db>/<db>.sqlite")
    ],
    limit: Annotated[
        int | None, typer.Option(help="a seeded sample of N questions, stratified by database")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the --limit sample")] = 10,
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="write the report there (every question's SQL too), and each question's record "
            "to <out>.records.jsonl as it is scored",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Execution accuracy of sql routes on Spider dev, one row per technique: zero-shot,
    + sample values, + few-shot, + hypothetical-SQL retrieval, + self-correction. Needs an LLM
    (GROUNDED_LLM_BASE_URL, any OpenAI-compatible endpoint)."""
    from ingest.build import build_embedder
    from service.llm import LLMError, OpenAIChat

    from .sql import SpiderError, evaluate_sql, load_spider, plumbing_note, sample

    settings = Settings()
    if not settings.llm_configured:
        err.print(
            "[red]error:[/red] eval sql needs an LLM: set GROUNDED_LLM_BASE_URL "
            "(or OPENAI_BASE_URL) and/or GROUNDED_LLM_MODEL"
        )
        raise typer.Exit(2)
    if limit is not None and limit < 1:
        err.print("[red]error:[/red] --limit must be at least 1")
        raise typer.Exit(2)
    try:
        every = load_spider(dataset)
    except SpiderError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    chosen = sample(every, limit, seed)
    llm = OpenAIChat.from_settings(settings)
    partial = out_file.with_suffix(".records.jsonl") if out_file else None
    if partial is not None:
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text("", encoding="utf-8")

    def keep(record: dict[str, Any]) -> None:
        if partial is not None:
            with partial.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")

    try:
        with _progress(as_json or not err.is_terminal) as progress:
            task = progress.add_task("text-to-SQL", total=len(chosen))
            # The pool is the whole dev set; each question sees only other databases' examples.
            report = evaluate_sql(
                chosen,
                llm,
                build_embedder(settings),
                settings,
                pool=every,
                tick=lambda n: progress.advance(task, n),
                on_record=keep,
            )
    except (LLMError, ValueError) as exc:
        err.print(f"[red]error:[/red] {getattr(exc, 'reason', exc)}")
        raise typer.Exit(1) from None
    report = {"dataset": str(dataset), "split": "dev", "limit": limit, "seed": seed, **report}
    report["note"] = plumbing_note(report["model"])
    if out_file is not None:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    summary = {k: v for k, v in report.items() if k != "records"}
    if as_json:
        out.print_json(json.dumps(summary))
        return
    table = Table(
        title=f"Spider dev execution accuracy: {report['evaluated']} questions "
        f"({report['skipped']} skipped), model {report['model']}"
    )
    table.add_column("row")
    table.add_column("execution accuracy", justify="right")
    table.add_column("correct", justify="right")
    table.add_column("query errors", justify="right")
    for row in report["rows"]:
        accuracy = row["execution_accuracy"]
        table.add_row(
            row["name"],
            "n/a" if accuracy is None else f"{accuracy:.3f}",
            str(row["correct"]),
            str(row["query_errors"]),
        )
    out.print(table)
    if report["note"]:
        out.print(report["note"])
