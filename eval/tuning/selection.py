"""Model selection on the dev hold-out: nDCG@10 after each epoch, the best epoch's weights, and
the keep rule (a tuned model is kept only if it beats the base model on dev).

Example::

    watch = BestEpoch(model, score=lambda m: dev_ndcg(m), base=dev_ndcg(model), patience=1)
    trainer = SentenceTransformerTrainer(..., callbacks=[watch])
    trainer.train()
    outcome = watch.finish()         # best weights restored; outcome.kept says whether to use it
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainerCallback


@dataclass
class Outcome:
    """What training did on dev. ``kept`` is the keep rule's verdict."""

    base_dev: float
    best_dev: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    min_gain: float = 0.0

    @property
    def kept(self) -> bool:
        return keep(self.base_dev, self.best_dev, self.min_gain)

    @property
    def verdict(self) -> str:
        change = f"dev nDCG@10 {self.base_dev:.4f} -> {self.best_dev:.4f}"
        if self.kept:
            return f"kept tuned model (epoch {self.best_epoch}): {change}"
        return f"kept base: the tuned model did not beat it on dev ({change})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "base_dev_ndcg@10": round(self.base_dev, 4),
            "best_dev_ndcg@10": round(self.best_dev, 4),
            "best_epoch": self.best_epoch,
            "min_gain": self.min_gain,
            "kept": self.kept,
            "verdict": self.verdict,
            "history": self.history,
        }


def keep(base_dev: float, tuned_dev: float, min_gain: float = 0.0) -> bool:
    """The keep rule: a tuned model replaces the base only when it is better on dev by more than
    ``min_gain`` (a tie keeps the base: a model that is no better is not worth a re-index)."""
    return tuned_dev > base_dev + min_gain


class BestEpoch(TrainerCallback):
    """Scores the model on dev after every epoch, keeps a copy of the best weights and stops
    training after ``patience`` epochs without a new best (early stopping on dev nDCG@10).

    Args:
        model: the model being trained (the object the trainer was given).
        score: dev nDCG@10 of a model.
        base: the base model's dev score (epoch 0).
        patience: epochs without improvement before training stops.
        log: where progress lines go.
    """

    def __init__(
        self,
        model: Any,
        score: Callable[[Any], float],
        base: float,
        *,
        patience: int = 1,
        min_gain: float = 0.0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if patience < 1:
            raise ValueError("patience must be >= 1")
        self.model = model
        self.score = score
        self.patience = patience
        self.log = log or (lambda _m: None)
        self.outcome = Outcome(base, base, 0, [{"epoch": 0, "dev_ndcg@10": round(base, 4)}])
        self.outcome.min_gain = min_gain
        self._best_state: dict[str, Any] | None = None
        self._stale = 0

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        epoch = len(self.outcome.history)
        value = self.score(self.model)
        self.outcome.history.append({"epoch": epoch, "dev_ndcg@10": round(value, 4)})
        self.log(f"epoch {epoch}: dev nDCG@10 {value:.4f}")
        # The first epoch always becomes the best tuned one, even below the base, so finish()
        # has tuned weights to report; the keep rule then compares them with the base.
        if self._best_state is None or value > self.outcome.best_dev:
            self.outcome.best_dev, self.outcome.best_epoch = value, epoch
            self._best_state = copy.deepcopy(self.model.state_dict())
            self._stale = 0
        else:
            self._stale += 1
            if self._stale >= self.patience:
                self.log(f"early stop: no dev gain for {self._stale} epoch(s)")
                control.should_training_stop = True
        return control

    def finish(self) -> Outcome:
        """Restore the best epoch's weights into the model and return the outcome."""
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        return self.outcome
