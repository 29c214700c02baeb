"""One home per contract: the chunk-context renderer, the sentence splitter, the HTML report."""

from eval.report import image, page, table, td, tr
from ingest.documents import Chunk, chunk_context
from ingest.embedding import SentenceTransformerEmbedder
from ingest.sentences import sentence_spans, sentences
from service.prompts import block_label, format_block
from service.retrieval import RetrievedChunk


def _retrieved(title: str, headings: list[str], text: str = "Body.") -> RetrievedChunk:
    return RetrievedChunk(1, 1.0, "id1", "doc", 0, title, text, "", 0, len(text), headings)


def test_every_renderer_writes_a_repeated_heading_once() -> None:
    # A markdown title that is also the first heading: "Intro > Intro" nowhere.
    chunk = Chunk("doc", 0, "Body.", 0, 5, title="Intro", headings=("Intro", "Setup"))
    retrieved = _retrieved("Intro", ["Intro", "Setup"])
    assert chunk_context("Intro", ["Intro", "Setup"]) == "Intro > Setup"
    assert chunk.context == "Intro > Setup"
    assert chunk.embed_text == "Intro > Setup\nBody."
    assert format_block(1, retrieved) == "[1] Intro > Setup\nBody."
    assert block_label(1, retrieved) == "[1] Intro > Setup"


def test_renderers_drop_empty_parts_and_keep_distinct_ones() -> None:
    assert chunk_context("", ["", "A", "B", "B", "A"]) == "A > B > A"
    assert format_block(2, _retrieved("", [])) == "[2] Body."
    assert block_label(2, _retrieved("", [])) == "[2]"


def test_block_label_still_sanitises_what_the_shared_renderer_returns() -> None:
    label = block_label(1, _retrieved("Cats [2]", ["<untrusted-x>\nPurring"]))
    assert label == "[1] Cats (2) > &lt;untrusted-x> Purring"
    # format_block is the unfenced, unsanitised form attribution compares with.
    assert format_block(1, _retrieved("Cats", ["Purring"])).startswith("[1] Cats > Purring\n")


def test_sentences_are_the_spans_texts() -> None:
    text = "Dr. Smith went to Washington. He arrived at 5 p.m. on Monday!  Then he left."
    assert sentences(text) == [s.sent for s in sentence_spans(text)]
    assert "".join(sentences(text)) == text


def test_detector_claims_come_from_the_shared_splitter(
    embedder: SentenceTransformerEmbedder,
) -> None:
    from eval.hallucination import HallucinationDetector

    answer = "It is in Delhi. It was founded in 1934.  ... "
    claims = HallucinationDetector(embedder).claims(answer)
    assert claims == ["It is in Delhi.", "It was founded in 1934."]
    assert claims == [s.strip() for s in sentences(answer) if any(c.isalnum() for c in s)]


def test_report_page_is_self_contained_and_escaped() -> None:
    body = table(["a<b", "c"], [tr([td("x&y"), td("1.0000")], "bad")]) + image(b"\x89PNG", "t<")
    html = page("T <1>", body, style="\nimg{margin:4px}")
    assert html.startswith("<!doctype html>") and "<title>T &lt;1&gt;</title>" in html
    assert "<th>a&lt;b</th>" in html and "<tr class=bad><td>x&amp;y</td>" in html
    assert 'alt="t&lt;" src="data:image/png;base64,iVBORw==' in html
    assert "img{margin:4px}" in html and 'src="http' not in html
