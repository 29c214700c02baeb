"""Two tiny BEIR sets with dev and test splits, built from the test fixtures the way
`grounded eval build-sets` builds them, as `--dataset` arguments for the eval commands."""

from pathlib import Path

from eval.beir_build import build_halueval, build_xquad

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def tiny_set_args(folder: Path) -> list[str]:
    """``["--dataset", xquad-en, "--dataset", halueval-qa]`` of sets built under ``folder``."""
    xquad = build_xquad(FIXTURES / "squad_mini.json", folder).path
    halueval = build_halueval(FIXTURES / "halueval_mini.jsonl", folder, rows=12).path
    return ["--dataset", str(xquad), "--dataset", str(halueval)]
