"""``ingest/sentences.py``: pysbd's sentences, offsets found in one pass, lines as boundaries."""

import pysbd

from ingest.sentences import MAX_PIECE, sentence_bounds, sentence_spans, sentences

PROSE = (
    "Dr. Smith went to Washington. He arrived at 5 p.m. on Monday! Was it raining? "
    "The U.S. team, e.g. the one from Boston, won 3.5 to 2. Then he left. "
)


def _pysbd_spans(text: str) -> list[tuple[int, int]]:
    segmenter = pysbd.Segmenter(language="en", clean=False, char_span=True)
    return [(s.start, s.end) for s in segmenter.segment(text)]


def test_spans_are_pysbds_and_partition_the_text() -> None:
    spans = sentence_spans(PROSE)
    assert [(s.start, s.end) for s in spans] == _pysbd_spans(PROSE)
    assert "".join(sentences(PROSE)) == PROSE
    assert all(PROSE[s.start : s.end] == s.sent for s in spans)
    assert sentence_spans("") == [] and sentence_spans(" \n\t ") == []


def test_bounds_leave_out_whitespace() -> None:
    text = "  One here.   Two there.\n\n"
    assert [text[lo:hi] for lo, hi in sentence_bounds(text)] == ["One here.", "Two there."]


def test_a_line_break_always_ends_a_sentence() -> None:
    text = "Steps\n- open the valve\n- close it\n| a | b |\n| 1 | 2 |\n    x = f(y)\nDone."
    got = [text[lo:hi] for lo, hi in sentence_bounds(text)]
    assert got == [
        *("Steps", "- open the valve", "- close it"),
        *("| a | b |", "| 1 | 2 |", "x = f(y)", "Done."),
    ]


def test_a_long_line_splits_as_pysbd_splits_it_whole() -> None:
    line = PROSE * 50  # well over one window
    assert len(line) > 3 * MAX_PIECE
    assert [(s.start, s.end) for s in sentence_spans(line)] == _pysbd_spans(line)


def test_a_sentence_longer_than_a_window_stays_one_sentence() -> None:
    runaway = "The list goes on " + " and on" * (MAX_PIECE // 3) + " until it stops."
    text = f"It begins. {runaway} It ends."
    assert [text[lo:hi] for lo, hi in sentence_bounds(text)] == ["It begins.", runaway, "It ends."]
