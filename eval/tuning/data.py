"""Training pairs for tuning: (question, relevant passage) from a BEIR split or a JSONL file,
and the seeded dev hold-out that every keep/drop decision is made on.

Example::

    data = load_beir_pairs(Path("../shared/datasets/scifact"), split="train")
    train_ids, dev_ids = split_dev(list(data.queries), share=0.15, minimum=20, seed=13)
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ingest.documents import Document, chunk_context

from ..datasets import DatasetError, load_beir


@dataclass
class TrainingData:
    """Questions, their relevant passages and the corpus they come from.

    ``positives[qid]`` are document ids with relevance > 0; ``documents`` is what gets indexed
    (and mined for hard negatives); ``texts[doc_id]`` is a passage as the model reads it.
    """

    name: str
    path: Path
    queries: dict[str, str]
    positives: dict[str, list[str]]
    documents: list[Document]

    def __post_init__(self) -> None:
        # Title then text, as ingest's chunks put their title line (chunk_context) before the
        # text they embed, so training sees what retrieval sees.
        self.texts = {
            d.id: f"{chunk_context(d.title, ())}\n{d.text}" if d.title else d.text
            for d in self.documents
        }
        missing = [d for ids in self.positives.values() for d in ids if d not in self.texts]
        if missing:
            raise DatasetError(
                f"{len(missing)} relevant ids are not in the corpus, e.g. {missing[0]}"
            )

    def qrels(self, qids: Sequence[str]) -> dict[str, dict[str, int]]:
        """pytrec_eval qrels of some questions (every positive relevance 1)."""
        return {q: dict.fromkeys(self.positives[q], 1) for q in qids}


def load_beir_pairs(folder: Path, split: str = "train") -> TrainingData:
    """Judged questions of a BEIR split (relevance > 0) with the whole corpus."""
    data = load_beir(folder, split)
    positives = {q: [d for d, rel in docs.items() if rel > 0] for q, docs in data.qrels.items()}
    positives = {q: ids for q, ids in positives.items() if ids}
    if not positives:
        raise DatasetError(f"{folder}: no relevant pairs in qrels/{data.split}.tsv")
    queries = {q: data.queries[q] for q in positives}
    return TrainingData(data.name, data.path, queries, positives, data.corpus)


def _passage_id(text: str) -> str:
    return "p-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def load_jsonl_pairs(path: Path) -> TrainingData:
    """JSON Lines of ``{"question", "passage"[, "id", "passage_id", "title"]}``.

    Each distinct passage becomes a corpus document (its id ``passage_id`` or a hash of its
    text); lines with the same question (or ``id``) share one query with several positives.
    """
    path = Path(path)
    queries: dict[str, str] = {}
    positives: dict[str, list[str]] = {}
    docs: dict[str, Document] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            question, passage = str(record["question"]), str(record["passage"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DatasetError(
                f"{path}:{number}: each line needs a JSON object with question and passage ({exc})"
            ) from None
        if not question.strip() or not passage.strip():
            raise DatasetError(f"{path}:{number}: empty question or passage")
        doc_id = str(record.get("passage_id") or _passage_id(passage))
        docs.setdefault(doc_id, Document(doc_id, passage, title=str(record.get("title", ""))))
        qid = str(record.get("id") or _passage_id(question))
        queries[qid] = question
        if doc_id not in positives.setdefault(qid, []):
            positives[qid].append(doc_id)
    if not queries:
        raise DatasetError(f"{path}: no question/passage pairs")
    return TrainingData(path.stem, path, queries, positives, list(docs.values()))


def split_dev(
    qids: Sequence[str], *, share: float = 0.15, minimum: int = 20, seed: int = 13
) -> tuple[list[str], list[str]]:
    """A seeded, disjoint (train, dev) split of question ids: ``share`` of them, at least
    ``minimum``, go to dev. The same ids and seed always give the same split, whatever order the
    ids come in."""
    if not 0 < share < 1:
        raise ValueError("the dev share must be between 0 and 1")
    ordered = sorted(set(qids))
    n_dev = max(minimum, round(share * len(ordered)))
    if len(ordered) - n_dev < 2:
        raise DatasetError(
            f"{len(ordered)} questions are too few to hold out a dev split of {n_dev} and train "
            f"on the rest; give more pairs or lower --dev-min"
        )
    random.Random(seed).shuffle(ordered)
    dev = sorted(ordered[:n_dev])
    train = sorted(ordered[n_dev:])
    return train, dev
