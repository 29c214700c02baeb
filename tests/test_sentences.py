"""``ingest/sentences.py``: sentencex's sentences with exact character offsets, lines as
boundaries, long lines split whole."""

import sentencex

from ingest.sentences import sentence_bounds, sentence_spans, sentences

PROSE = (
    "Dr. Smith went to Washington. He arrived at 5 p.m. on Monday! Was it raining? "
    "The U.S. team, e.g. the one from Boston, won 3.5 to 2. Then he left. "
)


def test_abbreviations_and_numbers_do_not_end_sentences() -> None:
    assert sentences(PROSE) == [
        "Dr. Smith went to Washington. ",
        "He arrived at 5 p.m. on Monday! ",
        "Was it raining? ",
        "The U.S. team, e.g. the one from Boston, won 3.5 to 2. ",
        "Then he left. ",
    ]


def test_spans_partition_the_text_with_exact_offsets() -> None:
    spans = sentence_spans(PROSE)
    assert "".join(sentences(PROSE)) == PROSE
    assert all(PROSE[s.start : s.end] == s.sent for s in spans)
    assert sentence_spans("") == [] and sentence_spans(" \n\t ") == []
    # offsets count characters, not UTF-8 bytes
    text = "Les β-cellules sont là. Ça marche? Emoji 🎉 done. 日本語の文。 Last."
    got = [text[lo:hi] for lo, hi in sentence_bounds(text)]
    assert got == [
        *("Les β-cellules sont là.", "Ça marche?", "Emoji 🎉 done."),
        *("日本語の文。", "Last."),
    ]


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


def test_a_long_line_splits_whole_as_sentencex_splits_it() -> None:
    line = PROSE * 2_000  # 280,000 characters on one line, split in one call (no windows)
    spans = sentence_spans(line)
    expected = [b["start_index"] for b in sentencex.get_sentence_boundaries("en", line)]
    assert [s.start for s in spans] == expected and len(spans) == 5 * 2_000


def test_a_runaway_sentence_stays_one_sentence() -> None:
    runaway = "The list goes on " + " and on" * 2_000 + " until it stops."
    text = f"It begins. {runaway} It ends."
    assert [text[lo:hi] for lo, hi in sentence_bounds(text)] == ["It begins.", runaway, "It ends."]
