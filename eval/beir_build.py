"""BEIR-format retrieval sets built from public QA data, so defaults are chosen on more than one
corpus (``grounded eval build-sets``).

Each set is a folder with ``corpus.jsonl``, ``queries.jsonl``, ``qrels/dev.tsv`` and
``qrels/test.tsv``; the bytes depend only on the source file and the seed, so anyone rebuilding
gets the same sets and the same figures.

- **XQuAD-en** (:func:`build_xquad`): the corpus is the paragraphs, a question's one relevant
  document is the paragraph it was asked on. Dev and test are split **by article**: paragraphs of
  one article share topic and vocabulary, so questions on one article in both halves would let a
  choice made on dev see the test topics.
- **HaluEval QA** (:func:`build_halueval`): retrieval over the ``knowledge`` passages (HotpotQA
  supporting paragraphs) of a seeded sample of rows; a question's relevant document is its own
  passage. The split hashes the passage, so questions sharing a passage stay on one side.

Example::

    build_xquad(Path("../shared/datasets/xquad_en/xquad.en.json"), Path("eval-data/beir"))
    load_beir(Path("eval-data/beir/xquad-en"), "dev")
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_SEED = 14
DEFAULT_HALUEVAL_ROWS = 3000
SPLITS = ("dev", "test")


@dataclass(frozen=True)
class BuiltSet:
    name: str
    path: Path
    documents: int
    queries: dict[str, int]  # split -> judged queries

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "documents": self.documents,
            "queries": self.queries,
        }


def seeded_hash(seed: int, *parts: str) -> str:
    """A stable, platform-independent hash (Python's ``hash`` is salted per process)."""
    return hashlib.sha256("\x1f".join([str(seed), *parts]).encode()).hexdigest()


def _dev_count(n: int, dev_fraction: float) -> int:
    """Groups that go to dev: the fraction, but never all or none when there are two or more."""
    if n < 2:
        return n
    return min(n - 1, max(1, round(n * dev_fraction)))


def write_beir(
    folder: Path,
    corpus: Sequence[dict[str, Any]],
    queries: Sequence[dict[str, Any]],
    qrels: Mapping[str, Sequence[tuple[str, str]]],
) -> None:
    """Write a BEIR folder; ``qrels`` maps a split to its (query id, document id) pairs."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    for name, records in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        with (folder / name).open("w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    for split, pairs in qrels.items():
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, d in pairs]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def build_xquad(
    source: Path,
    out_dir: Path,
    *,
    seed: int = DEFAULT_SEED,
    dev_fraction: float = 0.5,
    name: str = "xquad-en",
) -> BuiltSet:
    """SQuAD-format JSON -> BEIR: paragraphs are documents, dev/test split by article."""
    data = json.loads(Path(source).read_text(encoding="utf-8"))["data"]
    corpus: list[dict[str, Any]] = []
    queries: list[dict[str, Any]] = []
    by_article: dict[str, list[tuple[str, str]]] = {}
    for a, article in enumerate(data):
        title = str(article.get("title", ""))
        pairs = by_article.setdefault(f"{a}", [])
        for p, paragraph in enumerate(article["paragraphs"]):
            # Positional ids: stable for a given file, and readable in a qrels line.
            doc_id = f"a{a:03d}p{p:02d}"
            corpus.append(
                {"_id": doc_id, "title": title, "text": paragraph["context"], "metadata": {}}
            )
            for qa in paragraph["qas"]:
                queries.append({"_id": str(qa["id"]), "text": qa["question"], "metadata": {}})
                pairs.append((str(qa["id"]), doc_id))
    # Order articles by a seeded hash of their title and position: a random but reproducible
    # split that does not follow the file's (topic-clustered) order.
    titles = {f"{a}": str(article.get("title", "")) for a, article in enumerate(data)}
    order = sorted(by_article, key=lambda a: seeded_hash(seed, "xquad", titles[a], a))
    dev_articles = set(order[: _dev_count(len(order), dev_fraction)])
    qrels: dict[str, list[tuple[str, str]]] = {"dev": [], "test": []}
    for article_key, pairs in by_article.items():
        qrels["dev" if article_key in dev_articles else "test"].extend(pairs)
    folder = Path(out_dir) / name
    write_beir(folder, corpus, queries, qrels)
    return BuiltSet(name, folder, len(corpus), {s: len(qrels[s]) for s in SPLITS})


def _jsonl(path: Path) -> Iterable[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def build_halueval(
    source: Path,
    out_dir: Path,
    *,
    rows: int = DEFAULT_HALUEVAL_ROWS,
    seed: int = DEFAULT_SEED,
    dev_fraction: float = 0.5,
    name: str = "halueval-qa",
) -> BuiltSet:
    """HaluEval ``qa_data.json`` -> BEIR: retrieval over the knowledge passages of ``rows``
    seeded-sampled rows (a few thousand keep indexing to minutes on two cores)."""
    records = list(_jsonl(source))
    # The sample is the rows with the smallest seeded hashes: reproducible, and independent of
    # the file's order (which follows HotpotQA's).
    keyed = sorted(
        range(len(records)), key=lambda i: seeded_hash(seed, "halueval", str(i), _q(records[i]))
    )
    sample = sorted(keyed[:rows])
    corpus: list[dict[str, Any]] = []
    doc_ids: dict[str, str] = {}
    queries: list[dict[str, Any]] = []
    pairs: list[tuple[str, str]] = []
    for i in sample:
        knowledge = str(records[i]["knowledge"])
        doc_id = doc_ids.get(knowledge)
        if doc_id is None:
            doc_id = doc_ids[knowledge] = "k" + hashlib.sha256(knowledge.encode()).hexdigest()[:12]
            corpus.append({"_id": doc_id, "title": "", "text": knowledge, "metadata": {}})
        qid = f"q{i:05d}"
        queries.append({"_id": qid, "text": _q(records[i]), "metadata": {}})
        pairs.append((qid, doc_id))
    # Split by passage, the same principle as XQuAD's articles: a passage's questions stay on one
    # side. The passages are ordered by a seeded hash and the first share goes to dev.
    order = sorted(doc_ids.values(), key=lambda d: seeded_hash(seed, "halueval-split", d))
    dev_docs = set(order[: _dev_count(len(order), dev_fraction)])
    qrels: dict[str, list[tuple[str, str]]] = {"dev": [], "test": []}
    for qid, doc_id in pairs:
        qrels["dev" if doc_id in dev_docs else "test"].append((qid, doc_id))
    folder = Path(out_dir) / name
    write_beir(folder, corpus, queries, qrels)
    return BuiltSet(name, folder, len(corpus), {s: len(qrels[s]) for s in SPLITS})


def _q(record: dict[str, Any]) -> str:
    return str(record["question"])
