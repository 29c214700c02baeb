"""Answer evaluation: questions through the full service pipeline (retrieve → answer).

Always on, no judge model needed:

- **id-based context precision / recall**, where the question lists its relevant document ids;
- **exact match / token F1** (SQuAD's normalisation), where reference answers exist;
- **unsupported-claim rate** from the offline hallucination detector, on the chunks the answer
  was built from.

With a judge LLM configured, ragas adds faithfulness, answer relevancy, context precision and
context recall (see :mod:`eval.judge`). A judge verdict that cannot be parsed is NaN: it is
counted as *undetermined* and reported apart, never averaged in as 0 and never dropped silently.

Datasets: a SQuAD-format JSON file (e.g. XQuAD: passages become the corpus, each question's gold
passage its relevant id), or JSON Lines of ``{"id", "question", "answers", "relevant_ids"}`` with
the corpus given separately.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.documents import Document
from ingest.loaders import LoadFailure, SourceFile, load_file
from service.pipeline import QueryResult, RagPipeline
from service.retrieval import SearchParams

from .hallucination import HallucinationDetector

_CITATION = re.compile(r"\s*\[\d+\]")


@dataclass(frozen=True)
class AnswerItem:
    id: str
    question: str
    answers: tuple[str, ...] = ()
    relevant_ids: tuple[str, ...] = ()


@dataclass
class AnswerSuite:
    name: str
    corpus: list[Document]
    items: list[AnswerItem]

    def limited(self, n: int | None) -> AnswerSuite:
        return AnswerSuite(self.name, self.corpus, self.items[:n]) if n else self


def load_squad(path: Path) -> AnswerSuite:
    """SQuAD v1.1 JSON (XQuAD): paragraphs → corpus, questions → items with gold answers."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    corpus: list[Document] = []
    items: list[AnswerItem] = []
    for a, article in enumerate(data["data"]):
        for p, paragraph in enumerate(article["paragraphs"]):
            doc_id = f"{a}-{p}"
            corpus.append(
                Document(
                    doc_id, paragraph["context"], title=article.get("title", ""), source=str(path)
                )
            )
            for qa in paragraph["qas"]:
                answers = tuple(dict.fromkeys(ans["text"] for ans in qa.get("answers", [])))
                items.append(AnswerItem(str(qa["id"]), qa["question"], answers, (doc_id,)))
    return AnswerSuite(Path(path).stem, corpus, items)


def load_answer_suite(path: Path, corpus: Path | None = None) -> AnswerSuite:
    path = Path(path)
    if path.suffix == ".json":
        return load_squad(path)
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            items.append(
                AnswerItem(
                    str(r["id"]),
                    r["question"],
                    tuple(r.get("answers", ())),
                    tuple(r.get("relevant_ids", ())),
                )
            )
    docs: list[Document] = []
    if corpus is not None:
        for item in load_file(SourceFile(Path(corpus).resolve(), Path(corpus).name)):
            if isinstance(item, LoadFailure):
                raise ValueError(f"bad corpus line: {item}")
            docs.append(item)
    return AnswerSuite(path.stem, docs, items)


# SQuAD's official answer normalisation ------------------------------------------------------
def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(g) for g in golds))


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    def f1(pred: str, gold: str) -> float:
        p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
        common = sum((Counter(p) & Counter(g)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(p), common / len(g)
        return 2 * precision * recall / (precision + recall)

    return max((f1(prediction, g) for g in golds), default=0.0)


def strip_citations(answer: str) -> str:
    return _CITATION.sub("", answer).strip()


@dataclass
class AnswerRecord:
    """One question's outcome; metrics that do not apply are None."""

    id: str
    question: str
    answer: str
    abstained: bool
    retrieved_ids: list[str]
    contexts: list[str]
    exact_match: float | None = None
    degraded: bool = False  # the LLM failed and the extractive answer stood in
    f1: float | None = None
    context_precision: float | None = None
    context_recall: float | None = None
    unsupported_rate: float | None = None
    hallucination_score: float | None = None
    judge: dict[str, float] = field(default_factory=dict)


def _record(
    item: AnswerItem, result: QueryResult, detector: HallucinationDetector | None
) -> AnswerRecord:
    retrieved = list(dict.fromkeys(c.doc_id for c in result.retrieval.chunks))
    contexts = [c.text for c in result.retrieval.chunks]
    answer = strip_citations(result.answer.text)
    rec = AnswerRecord(item.id, item.question, answer, result.answer.abstained, retrieved, contexts)
    rec.degraded = result.answer.degraded
    if item.answers:
        rec.exact_match = 0.0 if rec.abstained else exact_match(answer, item.answers)
        rec.f1 = 0.0 if rec.abstained else token_f1(answer, item.answers)
    if item.relevant_ids:
        relevant = set(item.relevant_ids)
        hits = len(relevant & set(retrieved))
        rec.context_precision = hits / len(retrieved) if retrieved else 0.0
        rec.context_recall = hits / len(relevant)
    if detector is not None and not rec.abstained and answer:
        # [n] names context block n, which for the LLM generator need not be the n-th hit
        context = result.answer.context or result.retrieval.chunks
        cited = sorted({c.number for c in result.answer.citations if c.number <= len(context)})
        used = [context[n - 1].text for n in cited] or [c.text for c in context]
        verdict = detector.check(item.question, answer, "\n".join(used))
        rec.unsupported_rate = verdict.unsupported_rate
        rec.hallucination_score = verdict.score
    return rec


def summarize(records: Sequence[AnswerRecord]) -> dict[str, Any]:
    """Means over the records a metric applies to; judge NaNs counted as undetermined."""
    summary: dict[str, Any] = {
        "questions": len(records),
        "abstained": sum(r.abstained for r in records),
    }
    for name in (
        "exact_match",
        "f1",
        "context_precision",
        "context_recall",
        "unsupported_rate",
        "hallucination_score",
    ):
        values = [getattr(r, name) for r in records if getattr(r, name) is not None]
        if values:
            summary[name] = round(sum(values) / len(values), 4)
    judge_names = sorted({k for r in records for k in r.judge})
    for name in judge_names:
        values = [r.judge[name] for r in records if name in r.judge]
        determined = [v for v in values if not math.isnan(v)]
        summary[f"judge.{name}"] = (
            round(sum(determined) / len(determined), 4) if determined else None
        )
        summary[f"judge.{name}.undetermined"] = len(values) - len(determined)
    return summary


def evaluate_answers(
    pipeline: RagPipeline,
    suite: AnswerSuite,
    collection: str,
    *,
    top_k: int = 5,
    detector: HallucinationDetector | None = None,
    judge: Callable[[list[AnswerRecord], list[AnswerItem]], None] | None = None,
    tick: Callable[[int], None] | None = None,
) -> tuple[dict[str, Any], list[AnswerRecord]]:
    records = []
    for item in suite.items:
        result = pipeline.query(SearchParams(item.question, collection=collection, top_k=top_k))
        records.append(_record(item, result, detector))
        if tick:
            tick(1)
    if judge is not None:
        judge(records, suite.items)
    summary = summarize(records)
    summary["generator"] = pipeline.generator_name
    summary["degraded"] = sum(r.degraded for r in records)
    return summary, records
