"""BEIR sets built from XQuAD and HaluEval: valid folders, deterministic, and dev/test disjoint
(by article for XQuAD, by passage for HaluEval); SciFact's missing dev split falls back to train."""

import json
from pathlib import Path

from typer.testing import CliRunner

from eval.beir_build import build_halueval, build_xquad
from eval.cli import app as eval_app
from eval.datasets import load_beir, resolve_split

FIXTURES = Path(__file__).parent / "fixtures"


def _squad(path: Path, articles: int = 6, paragraphs: int = 2) -> Path:
    """A SQuAD file with several paragraphs per article, so a paragraph split would differ
    from an article split."""
    data = [
        {
            "title": f"Topic {a}",
            "paragraphs": [
                {
                    "context": f"Paragraph {p} of topic {a} mentions fact number {a * 10 + p}.",
                    "qas": [
                        {"id": f"t{a}p{p}q{q}", "question": f"Which fact {q} in {a}/{p}?"}
                        for q in range(2)
                    ],
                }
                for p in range(paragraphs)
            ],
        }
        for a in range(articles)
    ]
    path.write_text(json.dumps({"version": "1.1", "data": data}))
    return path


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_xquad_split_by_article_and_deterministic(tmp_path: Path) -> None:
    source = _squad(tmp_path / "squad.json")
    built = build_xquad(source, tmp_path / "a")
    dev, test = load_beir(built.path, "dev"), load_beir(built.path, "test")
    assert len(dev.corpus) == len(test.corpus) == built.documents == 12
    assert not set(dev.queries) & set(test.queries)
    assert len(dev.queries) + len(test.queries) == 24 == sum(built.queries.values())
    # every question's one relevant document is its own paragraph
    assert {**dev.qrels, **test.qrels}["t0p1q1"] == {"a000p01": 1}

    def articles(qrels: dict[str, dict[str, int]]) -> set[str]:
        return {doc[:4] for judged in qrels.values() for doc in judged}

    assert articles(dev.qrels).isdisjoint(articles(test.qrels))
    assert len(articles(dev.qrels)) == 3  # half the articles
    again = build_xquad(source, tmp_path / "b")
    assert _files(again.path) == _files(built.path)
    other_seed = build_xquad(source, tmp_path / "c", seed=7)
    assert _files(other_seed.path) != _files(built.path)  # the seed does pick the split


def test_xquad_fixture_has_both_splits(tmp_path: Path) -> None:
    built = build_xquad(FIXTURES / "squad_mini.json", tmp_path)
    assert built.documents == 3 and built.queries["dev"] and built.queries["test"]


def test_halueval_passages_and_split(tmp_path: Path) -> None:
    source = FIXTURES / "halueval_mini.jsonl"
    built = build_halueval(source, tmp_path / "a", rows=10)
    dev, test = load_beir(built.path, "dev"), load_beir(built.path, "test")
    rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    by_text = {d.text: d.id for d in dev.corpus}
    assert len(dev.queries) + len(test.queries) == 10
    assert not set(dev.queries) & set(test.queries)
    assert set(by_text) <= {r["knowledge"] for r in rows}  # corpus = the sampled passages
    for data in (dev, test):
        for qid, judged in data.qrels.items():
            row = rows[int(qid[1:])]
            assert data.queries[qid] == row["question"]
            assert judged == {by_text[row["knowledge"]]: 1}
    assert {d for j in dev.qrels.values() for d in j}.isdisjoint(
        {d for j in test.qrels.values() for d in j}
    )
    assert _files(build_halueval(source, tmp_path / "b", rows=10).path) == _files(built.path)


def test_dev_falls_back_to_train(tmp_path: Path) -> None:
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n")
    assert resolve_split(tmp_path, "dev") == "train"
    assert resolve_split(tmp_path, "test") == "test"  # no stand-in: load_beir says it is missing
    (tmp_path / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n")
    assert resolve_split(tmp_path, "dev") == "dev"


def test_build_sets_command(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        eval_app,
        [
            "build-sets",
            "--out",
            str(tmp_path),
            "--xquad",
            str(FIXTURES / "squad_mini.json"),
            "--halueval",
            str(FIXTURES / "halueval_mini.jsonl"),
            "--halueval-rows",
            "6",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    built = {b["name"]: b for b in json.loads(result.output)}
    assert sum(built["halueval-qa"]["queries"].values()) == 6
    assert (tmp_path / "xquad-en" / "qrels" / "dev.tsv").is_file()
    missing = CliRunner().invoke(eval_app, ["build-sets", "--xquad", str(tmp_path / "none")])
    assert missing.exit_code == 2
