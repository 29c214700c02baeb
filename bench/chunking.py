"""Benchmark: sentence splitting and chunking throughput, against pysbd in the same run.

    .venv/bin/python bench/chunking.py [--dataset ../shared/datasets/scifact] [--docs 2000]

On the first ``--docs`` documents of a BEIR corpus plus this repository's markdown (lists,
tables, code: what ``grounded ingest`` meets in docs folders), in one process:

- **splitter**: :func:`ingest.sentences.sentence_spans` (sentencex), KB/s;
- **chunker**: the default :class:`~ingest.chunking.TokenChunker`, chunks/s (splitting, token
  counting and packing: what one ``ChunkPool`` worker does);

and, when ``pysbd`` is installed (``pip install pysbd``; the splitter before sentencex, no
longer a dependency), the same two with pysbd deciding the sentences, their ratios, and how
often the two agree on where a sentence starts. Best of ``--rounds`` rounds each.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import harness  # noqa: E402
from eval.datasets import load_beir  # noqa: E402
from ingest import chunking  # noqa: E402
from ingest.build import build_chunker, build_embedder  # noqa: E402
from ingest.documents import Document  # noqa: E402
from ingest.sentences import sentence_bounds, sentence_spans  # noqa: E402
from ingest.settings import Settings  # noqa: E402

_LINES = re.compile(r"[^\n\r]*\S[^\n\r]*")


def pysbd_bounds() -> Callable[[str], list[tuple[int, int]]] | None:
    """``sentence_bounds`` with pysbd deciding the sentences (lines still end them), or None."""
    try:
        import pysbd
    except ImportError:
        return None
    segmenter = pysbd.Segmenter(language="en", clean=False)

    def bounds(text: str) -> list[tuple[int, int]]:
        starts: list[int] = []
        for line in _LINES.finditer(text):
            cursor = line.start() + len(line.group()) - len(line.group().lstrip())
            starts.append(cursor)
            for sent in segmenter.segment(line.group()):
                at = text.find(sent.strip(), cursor) if sent.strip() else -1
                if at > starts[-1]:
                    starts.append(at)
                cursor = max(cursor, at + len(sent.strip()))
        ends = [*starts[1:], len(text)]
        return [(s, s + len(text[s:e].rstrip())) for s, e in zip(starts, ends, strict=True)]

    return bounds


def best_rate(rounds: int, amount: float, fn: Callable[[], object]) -> float:
    best = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        best = max(best, amount / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=REPO.parent / "shared/datasets/scifact")
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    corpus = load_beir(args.dataset).corpus[: args.docs]
    markdown = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    docs = corpus + [Document(p.name, p.read_text()) for p in markdown]
    texts = [d.text for d in docs]
    kb = sum(len(t) for t in texts) / 1000
    settings = Settings()
    chunker = build_chunker(settings, build_embedder(settings))
    chunks = sum(len(chunker.chunk(d)) for d in docs)
    print(harness.machine())
    print(f"{len(docs)} documents ({len(corpus)} of {args.dataset.name}, {len(markdown)} markdown)")
    print(f"{kb:,.0f} KB of text, {chunks:,} chunks; best of {args.rounds} rounds, one process\n")

    split = best_rate(args.rounds, kb, lambda: [sentence_spans(t) for t in texts])
    chunk = best_rate(args.rounds, chunks, lambda: [chunker.chunk(d) for d in docs])
    print(f"{'':10} {'split KB/s':>11} {'chunks/s':>9}")
    print(f"{'sentencex':10} {split:11,.0f} {chunk:9,.0f}")
    old = pysbd_bounds()
    if old is None:
        print("\npysbd is not installed: no baseline (pip install pysbd)")
        return
    old_split = best_rate(args.rounds, kb, lambda: [old(t) for t in texts])
    with mock.patch.object(chunking, "sentence_bounds", old):
        old_chunk = best_rate(args.rounds, chunks, lambda: [chunker.chunk(d) for d in docs])
    print(f"{'pysbd':10} {old_split:11,.0f} {old_chunk:9,.0f}")
    print(f"{'ratio':10} {split / old_split:10.1f}× {chunk / old_chunk:8.1f}×")
    same = ours = theirs = 0
    for text in texts:
        a = {s for s, _ in sentence_bounds(text)}
        b = {s for s, _ in old(text)}
        same, ours, theirs = same + len(a & b), ours + len(a), theirs + len(b)
    print(
        f"\nsentence starts: {theirs:,} by pysbd, {ours:,} by sentencex, {same:,} shared "
        f"({same / theirs:.1%} of pysbd's, {same / ours:.1%} of sentencex's)"
    )


if __name__ == "__main__":
    main()
