import itertools

import pytest
from transformers import PreTrainedTokenizerBase

from ingest.chunking import TokenChunker, split_sections
from ingest.documents import Document
from ingest.embedding import SentenceTransformerEmbedder

LONG = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(120))


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
    # consecutive chunks overlap and together cover the whole text
    for a, b in itertools.pairwise(chunks):
        assert b.start < a.end
    assert chunks[0].start == 0 and chunks[-1].end == len(doc.text)


def test_windows_prefer_sentence_ends(tokenizer: PreTrainedTokenizerBase) -> None:
    chunks = TokenChunker(tokenizer, 64, 8).chunk(Document("d", LONG))
    assert all(c.text.endswith(".") for c in chunks)


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
