"""ragas metrics with a judge LLM on any OpenAI-compatible endpoint.

Faithfulness, answer relevancy, context precision and context recall (the last two need reference
answers and are left out for datasets without them). Embeddings for answer relevancy come from
the service's own sentence-transformers model, so nothing is downloaded. ragas is imported only
when a judge is configured.

A row whose judge output cannot be parsed comes back as NaN; :func:`eval.answers.summarize`
reports those as *undetermined*.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ingest.embedding import Embedder

from .answers import AnswerItem, AnswerRecord


@dataclass(frozen=True)
class JudgeConfig:
    base_url: str
    model: str
    api_key: str = "not-needed"
    timeout: float = 120.0
    max_tokens: int = 1024
    max_workers: int = 2

    def describe(self) -> str:
        return f"{self.model} @ {self.base_url}"


def _langchain_embeddings(embedder: Embedder) -> Any:
    from langchain_core.embeddings import Embeddings

    class _Local(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return embedder.embed_documents(list(texts)).tolist()

        def embed_query(self, text: str) -> list[float]:
            return embedder.embed_query(text).tolist()

    return _Local()


class RagasJudge:
    """Callable plugged into :func:`eval.answers.evaluate_answers` as ``judge=``."""

    def __init__(self, config: JudgeConfig, embedder: Embedder) -> None:
        try:
            import ragas  # noqa: F401
        except ImportError as exc:
            raise RuntimeError(
                f"judge metrics need ragas ({exc}): pip install 'grounded[judge]'"
            ) from None
        self.config = config
        self.embedder = embedder

    def _metrics(self, with_reference: bool) -> list[Any]:
        from ragas.metrics import (
            Faithfulness,
            LLMContextPrecisionWithReference,
            LLMContextRecall,
            ResponseRelevancy,
        )

        metrics: list[Any] = [Faithfulness(), ResponseRelevancy()]
        if with_reference:
            metrics += [LLMContextPrecisionWithReference(), LLMContextRecall()]
        return metrics

    def __call__(self, records: list[AnswerRecord], items: Sequence[AnswerItem]) -> None:
        import warnings

        from langchain_openai import ChatOpenAI
        from ragas import EvaluationDataset, RunConfig, evaluate
        from ragas.embeddings import LangchainEmbeddingsWrapper
        from ragas.llms import LangchainLLMWrapper

        by_id = {item.id: item for item in items}
        rows = [r for r in records if not r.abstained and r.answer and r.contexts]
        if not rows:
            return
        with_reference = all(by_id[r.id].answers for r in rows)
        samples = []
        for r in rows:
            sample = {
                "user_input": r.question,
                "response": r.answer,
                "retrieved_contexts": r.contexts,
            }
            if with_reference:
                sample["reference"] = by_id[r.id].answers[0]
            samples.append(sample)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            llm = LangchainLLMWrapper(
                ChatOpenAI(
                    model=self.config.model,
                    base_url=self.config.base_url,
                    api_key=self.config.api_key,
                    temperature=0,
                    max_tokens=self.config.max_tokens,
                    timeout=self.config.timeout,
                    max_retries=1,
                )
            )
            embeddings = LangchainEmbeddingsWrapper(_langchain_embeddings(self.embedder))
            result = evaluate(
                EvaluationDataset.from_list(samples),
                metrics=self._metrics(with_reference),
                llm=llm,
                embeddings=embeddings,
                run_config=RunConfig(
                    timeout=int(self.config.timeout),
                    max_retries=1,
                    max_workers=self.config.max_workers,
                ),
                raise_exceptions=False,
                show_progress=False,
            )
        for record, scores in zip(rows, result.scores, strict=True):
            record.judge = {name: _as_float(value) for name, value in scores.items()}


def _as_float(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan
