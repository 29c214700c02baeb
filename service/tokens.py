"""Token counting for the LLM prompt budget.

Prompts are packed by counting tokens with a real tokenizer, not by guessing from characters.
``GROUNDED_LLM_TOKENIZER`` names the answer model's own tokenizer: a Hugging Face name or local
path (``HuggingFaceTokenCounter``) or a ``.gguf`` file (``GgufTokenCounter``, needs
llama-cpp-python). When it is unset the embedding model's tokenizer counts and a 25% margin is
added, because two tokenizers seldom split text the same way; the endpoint's own ``usage`` is
reported with every answer.

Example::

    counter = build_token_counter(settings, embedder)
    counter.count("How long is a token?")   # 6
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
from pathlib import Path
from typing import Any, Protocol

from ingest.embedding import Embedder
from ingest.settings import Settings

UNKNOWN_TOKENIZER_MARGIN = 1.25


class TokenCounter(Protocol):
    name: str

    def count(self, text: str) -> int: ...

    def truncate(self, text: str, max_tokens: int) -> str: ...


class HuggingFaceTokenCounter:
    """Counts with a ``transformers`` tokenizer (fast tokenizers give character offsets).

    Args:
        tokenizer: a loaded tokenizer, or a Hugging Face name / local path to load.
        margin: multiplier on every count (> 1 when this is not the answer model's tokenizer).
    """

    def __init__(self, tokenizer: Any, *, margin: float = 1.0, name: str | None = None) -> None:
        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            name = name or tokenizer
            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        # A private copy behind a lock: a fast tokenizer shared across threads can fail with
        # "Already borrowed" while another caller (the embedder) changes its truncation.
        self._tok = copy.deepcopy(tokenizer)
        self._lock = threading.Lock()
        self.margin = margin
        self.name: str = name or str(getattr(tokenizer, "name_or_path", "tokenizer"))

    def _encode(self, text: str, **kwargs: bool) -> dict:
        with self._lock:
            return self._tok(text, add_special_tokens=False, verbose=False, **kwargs)

    def _ids(self, text: str) -> list[int]:
        return list(self._encode(text)["input_ids"])

    def count(self, text: str) -> int:
        return math.ceil(len(self._ids(text)) * self.margin)

    def truncate(self, text: str, max_tokens: int) -> str:
        keep = int(max_tokens / self.margin)
        if keep <= 0:
            return ""
        enc = self._tok(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = enc["offset_mapping"]
        if len(offsets) <= keep:
            return text
        return text[: offsets[keep - 1][1]]


class GgufTokenCounter:
    """Counts with the vocabulary inside a GGUF model file (what llama.cpp serves)."""

    def __init__(self, path: str | Path) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise RuntimeError(
                f"counting tokens with {path} needs llama-cpp-python (see DEVELOPERS.md)"
            ) from exc
        try:  # llama.cpp prints context warnings even for a vocabulary-only load
            from llama_cpp._utils import suppress_stdout_stderr

            quiet: Any = suppress_stdout_stderr(disable=False)
        except ImportError:
            quiet = contextlib.nullcontext()
        with quiet:
            self._llama = Llama(model_path=str(path), vocab_only=True, verbose=False)
        self._lock = threading.Lock()
        self.name = Path(path).name

    def _ids(self, text: str) -> list[int]:
        with self._lock:
            return self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def count(self, text: str) -> int:
        return len(self._ids(text))

    def truncate(self, text: str, max_tokens: int) -> str:
        ids = self._ids(text)
        if len(ids) <= max_tokens:
            return text
        if max_tokens <= 0:
            return ""
        with self._lock:
            cut = self._llama.detokenize(ids[:max_tokens])
        return cut.decode("utf-8", errors="ignore")


def build_token_counter(settings: Settings, embedder: Embedder) -> TokenCounter:
    name = settings.llm_tokenizer
    if name is None:
        return HuggingFaceTokenCounter(
            embedder.tokenizer,
            margin=UNKNOWN_TOKENIZER_MARGIN,
            name=f"{embedder.name} (+{UNKNOWN_TOKENIZER_MARGIN - 1:.0%} margin)",
        )
    if name.endswith(".gguf"):
        return GgufTokenCounter(name)
    return HuggingFaceTokenCounter(name)
