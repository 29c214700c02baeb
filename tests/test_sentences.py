"""``ingest/sentences.py``: sentencex's sentences with exact character offsets, wrapped prose
read across its line breaks, markdown blocks and code lines as units, long lines split whole."""

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


def test_blocks_stand_alone_and_code_is_never_split() -> None:
    text = (
        "Steps\n- open the valve\n- close it\n| a | b |\n| 1 | 2 |\n    x = f(y)\nDone.\n\n"
        "```bash\ngrounded ingest PATH... --json. Then more\n```\n# A heading. Still one\n"
        "1. first item\n   wraps here. Second.\n2) next"
    )
    got = [text[lo:hi] for lo, hi in sentence_bounds(text)]
    assert got == [
        *("Steps", "- open the valve", "- close it"),
        *("| a | b |", "| 1 | 2 |", "x = f(y)", "Done."),
        *("```bash", "grounded ingest PATH... --json. Then more", "```", "# A heading. Still one"),
        *("1. first item\n   wraps here.", "Second.", "2) next"),
    ]


def test_wrapped_prose_is_read_whole_across_its_line_breaks() -> None:
    text = (
        "Every document has an id (for files: the path relative to the folder you name, including\n"
        "the folder's own name) and a content\nhash over its text. A changed one is re-chunked.\n"
        "\n"
        "A new paragraph\r\nwrapped the Windows way.\r\n\r\n    indented = 'code after a blank'\n"
    )
    got = [text[lo:hi] for lo, hi in sentence_bounds(text)]
    assert got == [
        "Every document has an id (for files: the path relative to the folder you name, including\n"
        "the folder's own name) and a content\nhash over its text.",
        "A changed one is re-chunked.",
        "A new paragraph\r\nwrapped the Windows way.",
        "indented = 'code after a blank'",
    ]


def test_a_block_quote_and_a_list_items_indented_paragraph_read_as_prose() -> None:
    text = (
        "> A quoted sentence that\n> wraps over lines. And a second\n>  one.\n\n"
        "- an item\n\n    its own paragraph, indented\n    and wrapped. Yes.\n\n"
        "        code_in_item()\n\nText after the list.\n\n    code_after_prose()\n"
    )
    got = [text[lo:hi] for lo, hi in sentence_bounds(text)]
    assert got == [
        *("> A quoted sentence that\n> wraps over lines.", "And a second\n>  one."),
        *("- an item", "its own paragraph, indented\n    and wrapped.", "Yes."),
        *("code_in_item()", "Text after the list.", "code_after_prose()"),
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
