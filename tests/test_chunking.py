import itertools

import pytest
from transformers import PreTrainedTokenizerBase

from ingest.chunking import TokenChunker, split_sections
from ingest.documents import Chunk, Document
from ingest.embedding import SentenceTransformerEmbedder
from ingest.sentences import sentence_bounds

# Not "topic 3. Sentence ...": a splitter may read a run of "<n>. " as a numbered list.
LONG = " ".join(f"Sentence number {i} talks about topic {i % 7} today." for i in range(120))
PROSE = " ".join(
    f"Trial {i} enrolled {10 + i} patients with {'severe' if i % 3 else 'mild'} asthma"
    + (", and most of them finished the whole course of treatment." if i % 3 == 0 else ".")
    for i in range(80)
)


@pytest.fixture(scope="module")
def tokenizer(embedder: SentenceTransformerEmbedder) -> PreTrainedTokenizerBase:
    return embedder.tokenizer


def n_tokens(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=True)["input_ids"])


@pytest.mark.parametrize(("size", "overlap"), [(64, 8), (128, 16), (256, 32)])
def test_chunks_fit_budget_and_point_back_into_text(
    tokenizer: PreTrainedTokenizerBase, size: int, overlap: int
) -> None:
    doc = Document("d", LONG, title="Topics")
    chunks = TokenChunker(tokenizer, size, overlap).chunk(doc)
    assert len(chunks) > 1
    for i, chunk in enumerate(chunks):
        assert chunk.chunk_index == i
        assert doc.text[chunk.start : chunk.end] == chunk.text
        assert n_tokens(tokenizer, chunk.embed_text) <= size
        assert chunk.embed_text.startswith("Topics\n")
    # consecutive chunks overlap (or, where no whole sentence fits the overlap, abut) and
    # together cover the whole text
    for a, b in itertools.pairwise(chunks):
        assert b.start < a.end or doc.text[a.end : b.start].strip() == ""
    assert any(b.start < a.end for a, b in itertools.pairwise(chunks)) == (overlap >= 16)
    assert chunks[0].start == 0 and chunks[-1].end == len(doc.text)


def test_windows_prefer_sentence_ends(tokenizer: PreTrainedTokenizerBase) -> None:
    chunks = TokenChunker(tokenizer, 64, 8).chunk(Document("d", LONG))
    assert all(c.text.endswith(".") for c in chunks)


def _check_sentence_chunks(
    tokenizer: PreTrainedTokenizerBase, doc: Document, chunks: list[Chunk], overlap: int
) -> None:
    """Chunks are runs of whole sentences that list their own sentences, and consecutive ones
    share whole sentences of at most ``overlap`` tokens."""
    bounds = sentence_bounds(doc.text)
    starts, ends = {lo for lo, _ in bounds}, {hi for _, hi in bounds}
    for chunk in chunks:
        assert doc.text[chunk.start : chunk.end] == chunk.text
        assert chunk.start in starts and chunk.end in ends, chunk.text
        inside = [lo - chunk.start for lo, hi in bounds if chunk.start <= lo < chunk.end]
        assert list(chunk.sentences) == inside
    for a, b in itertools.pairwise(chunks):
        if b.start < a.end:
            shared = doc.text[b.start : a.end]
            assert len(tokenizer(shared, add_special_tokens=False)["input_ids"]) <= overlap
        else:
            assert doc.text[a.end : b.start].strip() == ""  # nothing is skipped


@pytest.mark.parametrize(("size", "overlap"), [(48, 12), (64, 16), (128, 24)])
def test_chunks_are_whole_sentences_overlapping_by_whole_sentences(
    tokenizer: PreTrainedTokenizerBase, size: int, overlap: int
) -> None:
    doc = Document("d", PROSE, title="Asthma trials")
    chunker = TokenChunker(tokenizer, size, overlap)
    chunks = chunker.chunk(doc)
    assert len(chunks) > 3 and chunker.signature == f"sentencex:{size}:{overlap}"
    _check_sentence_chunks(tokenizer, doc, chunks, overlap)
    assert any(b.start < a.end for a, b in itertools.pairwise(chunks))  # short ones are shared
    for chunk in chunks:
        assert n_tokens(tokenizer, chunk.embed_text) <= size


def test_no_overlap_when_the_last_sentence_is_over_the_overlap(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    # Every sentence is longer than 8 tokens: sharing one would exceed the overlap.
    chunks = TokenChunker(tokenizer, 64, 8).chunk(Document("d", PROSE))
    assert all(b.start > a.end for a, b in itertools.pairwise(chunks))
    _check_sentence_chunks(tokenizer, Document("d", PROSE), chunks, 8)


def test_only_a_sentence_over_the_budget_is_cut(tokenizer: PreTrainedTokenizerBase) -> None:
    runaway = "The protocol " + " ".join(f"then step{i} runs" for i in range(120)) + " at last."
    text = f"It starts well. {runaway} Then it ends well."
    doc = Document("d", text)
    chunks = TokenChunker(tokenizer, 64, 8).chunk(doc)
    first, *pieces, last = chunks
    assert (first.text, first.sentences) == ("It starts well.", (0,))
    assert (last.text, last.sentences) == ("Then it ends well.", (0,))
    assert len(pieces) > 2 and all(p.sentences == () for p in pieces)  # no whole sentence
    assert pieces[0].start == text.index("The protocol") and pieces[-1].text.endswith("at last.")
    for a, b in itertools.pairwise(pieces):
        assert b.start < a.end  # token overlap inside the long sentence, as before
        assert text[b.start - 1] == " "  # cut between words
    for chunk in chunks:
        assert doc.text[chunk.start : chunk.end] == chunk.text
        assert n_tokens(tokenizer, chunk.embed_text) <= 64


def test_markdown_lists_and_tables_are_chunked_at_lines(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    items = "\n".join(f"- install package number {i} with the usual flags" for i in range(25))
    rows = "\n".join(f"| host-{i} | 10.0.0.{i} | eu-west |" for i in range(25))
    text = (
        f"# Setup\n\nSteps\n{items}\n\n## Hosts\n\n| host | ip | region |\n|---|---|---|\n{rows}\n"
    )
    doc = Document("m", text, title="Runbook")
    chunks = TokenChunker(tokenizer, 64, 16).chunk(doc)
    assert {c.headings for c in chunks} == {("Setup",), ("Setup", "Hosts")}
    assert len(chunks) > 4
    for chunk in chunks:
        assert doc.text[chunk.start : chunk.end] == chunk.text
        assert chunk.start == 0 or text[chunk.start - 1] == "\n"
        assert text[chunk.end : chunk.end + 1] in ("\n", "")
        lines = chunk.text.split("\n")
        assert len(chunk.sentences) == len(lines)  # one line, one sentence
        assert n_tokens(tokenizer, chunk.embed_text) <= 64
    assert any(b.start < a.end for a, b in itertools.pairwise(chunks))  # whole lines shared


def test_headings_become_context(tokenizer: PreTrainedTokenizerBase) -> None:
    text = (
        "# Manual\n\nIntro.\n\n## Install\n\nRun pip.\n\n"
        "### Linux\n\nUse apt.\n\n## Usage\n\nCall it."
    )
    chunks = TokenChunker(tokenizer, 64, 8).chunk(Document("m", text, title="Manual"))
    assert [(c.text, c.headings) for c in chunks] == [
        ("Intro.", ("Manual",)),
        ("Run pip.", ("Manual", "Install")),
        ("Use apt.", ("Manual", "Install", "Linux")),
        ("Call it.", ("Manual", "Usage")),
    ]
    assert chunks[2].embed_text == "Manual > Install > Linux\nUse apt."


def test_split_sections_without_headings() -> None:
    assert [(s.start, s.end, s.headings) for s in split_sections("just text")] == [(0, 9, ())]


def test_invalid_config_is_rejected(tokenizer: PreTrainedTokenizerBase) -> None:
    with pytest.raises(ValueError):
        TokenChunker(tokenizer, 64, 40)
    with pytest.raises(ValueError):
        TokenChunker(tokenizer, 8, 0)
