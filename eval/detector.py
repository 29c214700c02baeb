"""Validate the hallucination detector on HaluEval QA: knowledge, question, right and wrong answer.

Each row gives two labelled answers: the right one (supported) and the hallucinated one. Rows are
split in two by a hash of the question; the decision threshold is chosen on the *calibration*
half only (best balanced accuracy) and every reported figure comes from the *held-out* half.
Metrics come from scikit-learn.

Example::

    report = validate_detector(HallucinationDetector(embedder), Path("qa_data.json"), limit=2000)
    report["held_out"]["auroc"]
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from .hallucination import HallucinationDetector

Tick = Callable[[int], None]


def load_halueval_qa(path: Path, limit: int | None = None) -> list[dict[str, str]]:
    rows = []
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line))
            if limit and len(rows) >= limit:
                break
    return rows


def is_held_out(question: str) -> bool:
    return hashlib.sha256(question.encode("utf-8")).digest()[0] % 2 == 1


def score_rows(
    detector: HallucinationDetector,
    rows: list[dict[str, str]],
    tick: Tick | None = None,
    batch: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Hallucination scores and labels (1 = hallucinated) for both answers of every row."""
    scores: list[float] = []
    labels: list[int] = []
    for start in range(0, len(rows), batch):
        part = rows[start : start + batch]
        items = []
        for row in part:
            items.append((row["question"], row["right_answer"], row["knowledge"]))
            items.append((row["question"], row["hallucinated_answer"], row["knowledge"]))
            labels.extend([0, 1])
        scores.extend(v.score for v in detector.check_many(items))
        if tick:
            tick(len(part))
    return np.asarray(scores), np.asarray(labels)


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The score cut (hallucinated when score > cut) with the best balanced accuracy."""
    candidates = np.unique(np.concatenate([[0.0], scores]))
    best, best_cut = -1.0, 0.5
    for cut in candidates:
        value = balanced_accuracy_score(labels, scores > cut)
        if value > best:
            best, best_cut = value, float(cut)
    return best_cut


def classification_report(scores: np.ndarray, labels: np.ndarray, cut: float) -> dict[str, float]:
    predicted = scores > cut
    return {
        "balanced_accuracy": round(float(balanced_accuracy_score(labels, predicted)), 4),
        "f1": round(float(f1_score(labels, predicted)), 4),
        "auroc": round(float(roc_auc_score(labels, scores)), 4),
        "answers": len(labels),
    }


def validate_detector(
    detector: HallucinationDetector, path: Path, limit: int | None = None, tick: Tick | None = None
) -> dict[str, Any]:
    """The JSON report: ``rows``, ``threshold``, and a classification report for each split."""
    rows = load_halueval_qa(path, limit)
    calibration = [r for r in rows if not is_held_out(r["question"])]
    held_out = [r for r in rows if is_held_out(r["question"])]
    if not calibration or not held_out:
        raise ValueError("need rows in both the calibration and the held-out split; raise --limit")
    cal_scores, cal_labels = score_rows(detector, calibration, tick)
    cut = best_threshold(cal_scores, cal_labels)
    test_scores, test_labels = score_rows(detector, held_out, tick)
    return {
        "dataset": str(path),
        "rows": len(rows),
        "threshold": round(cut, 4),
        "claim_support_threshold": round(1 - cut, 4),
        "calibration": classification_report(cal_scores, cal_labels, cut),
        "held_out": classification_report(test_scores, test_labels, cut),
    }
