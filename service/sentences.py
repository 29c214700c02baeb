"""Sentence splitting with character offsets (pysbd), safe to call from many threads.

A ``pysbd.Segmenter`` keeps the text it is splitting on the instance and computes character
spans from it, so one segmenter shared by concurrent requests can return another request's
offsets. Each thread gets its own.

The one sentence splitter of grounded: extractive answers, attribution and eval's hallucination
detector all split with it, so they agree on what a sentence is.

Example::

    for span in sentence_spans("One. Two."):
        span.sent, span.start   # "One. ", 0
    sentences("One. Two.")      # ["One. ", "Two."]
"""

from __future__ import annotations

import threading
from typing import Any

_local = threading.local()


def sentence_spans(text: str) -> list[Any]:
    """pysbd ``TextSpan``s (``sent``, ``start``, ``end``) of ``text``, trailing spaces included."""
    segmenter = getattr(_local, "segmenter", None)
    if segmenter is None:
        import pysbd

        segmenter = _local.segmenter = pysbd.Segmenter(language="en", clean=False, char_span=True)
    return list(segmenter.segment(text))


def sentences(text: str) -> list[str]:
    """The sentences of ``text`` (pysbd, nothing cleaned), trailing spaces included."""
    return [span.sent for span in sentence_spans(text)]
