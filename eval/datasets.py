"""BEIR-format datasets: plain dicts shaped like TREC files, as BEIR and pytrec_eval use them.

corpus  -> list[Document]            (corpus.jsonl, loaded by the same loader as ingest)
queries -> {query_id: text}           (queries.jsonl)
qrels   -> {query_id: {doc_id: rel}}  (qrels/<split>.tsv)
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from ingest.documents import Document
from ingest.loaders import LoadFailure, SourceFile, load_file


class DatasetError(ValueError):
    pass


@dataclass
class BeirDataset:
    name: str
    path: Path
    corpus: list[Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    split: str = "test"

    def limited(self, n: int | None) -> BeirDataset:
        """The first ``n`` judged queries (the corpus stays whole, so scores stay comparable)."""
        if not n:
            return self
        keep = list(self.qrels)[:n]
        return BeirDataset(
            self.name,
            self.path,
            self.corpus,
            {q: self.queries[q] for q in keep},
            {q: self.qrels[q] for q in keep},
            self.split,
        )


# Where a set has no dev split, its train split stands in for it (SciFact: BEIR ships train and
# test only); choosing defaults on train never touches the test queries.
SPLIT_FALLBACKS = {"dev": "train"}


def resolve_split(folder: Path, split: str) -> str:
    """``split``, or its stand-in (dev -> train) when the folder has no qrels for it."""
    qrels = Path(folder) / "qrels"
    fallback = SPLIT_FALLBACKS.get(split)
    if (
        not (qrels / f"{split}.tsv").is_file()
        and fallback
        and (qrels / f"{fallback}.tsv").is_file()
    ):
        return fallback
    return split


def load_beir(folder: Path, split: str = "test") -> BeirDataset:
    """A BEIR folder with the qrels of ``split`` (dev falls back to train, see
    :func:`resolve_split`); ``BeirDataset.split`` names the qrels file read."""
    folder = Path(folder)
    split = resolve_split(folder, split)
    corpus_path, queries_path = folder / "corpus.jsonl", folder / "queries.jsonl"
    qrels_path = folder / "qrels" / f"{split}.tsv"
    for path in (corpus_path, queries_path, qrels_path):
        if not path.is_file():
            raise DatasetError(
                f"{path} is missing: a BEIR dataset needs corpus.jsonl, "
                f"queries.jsonl and qrels/{split}.tsv"
            )
    corpus: list[Document] = []
    for item in load_file(SourceFile(corpus_path.resolve(), corpus_path.name)):
        if isinstance(item, LoadFailure):
            raise DatasetError(f"bad corpus line: {item}")
        corpus.append(item)
    queries = {}
    for line in queries_path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            queries[str(record["_id"])] = str(record["text"])
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise DatasetError(
            f"{len(missing)} judged queries are not in queries.jsonl, e.g. {missing[0]}"
        )
    return BeirDataset(folder.name, folder, corpus, {q: queries[q] for q in qrels}, qrels, split)
