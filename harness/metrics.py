"""Validation metrics and the sweep objective.

Each validation publishes `val_wer`, `val_wer_normalized` (0..1+ fractions, absent when the set has
no ASR samples) and `val_bleu` (0..1, absent without translation samples), overall, per pair
(`val_wer/en-en`) and per custom behaviour state (`val_wer/terse_on`), all scored by `harness.evaluation`
from the hypotheses of NeMo's own decode (`harness.transcripts`). The objective is built from those, never
from `val_loss`, whose meaning changes with `use_loss_mask_for_prompt`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from lightning.pytorch import Callback, LightningModule, Trainer

from harness.spec import ObjectiveSpec

Collect = Callable[[Mapping], dict]  # trainer.callback_metrics -> {name: float}


def logged_loss(callback_metrics: Mapping) -> dict[str, float]:
    """`val_loss` as a float: the one figure of NeMo's own logging the harness keeps."""
    return {"val_loss": float(callback_metrics["val_loss"])} if "val_loss" in callback_metrics else {}


def objective_values(metrics: Mapping[str, float], objective: ObjectiveSpec) -> list[float]:
    """The numbers Optuna sees, one per objective. NaN (no samples for it) is an error, not a silent zero."""
    wer, bleu = metrics.get("val_wer", math.nan), metrics.get("val_bleu", math.nan)
    values = {
        "wer": [wer],
        "wer_normalized": [metrics.get("val_wer_normalized", math.nan)],
        "bleu": [bleu],
        "mix": [wer - objective.bleu_weight * bleu],
        "pareto": [wer, bleu],
    }[objective.metric]
    if any(math.isnan(v) for v in values):
        raise ValueError(
            f"objective `{objective.metric}` is undefined: the validation manifest has no samples for it "
            "(WER needs source_lang==target_lang samples, BLEU needs translation samples)"
        )
    return values


def objective_value(metrics: Mapping[str, float], objective: ObjectiveSpec) -> float:
    """The primary objective (WER for `pareto`): what pruning reports and what "best" means."""
    return objective_values(metrics, objective)[0]


def is_better(a: float, b: float | None, direction: str) -> bool:
    """True when `a` beats `b` in the study direction (`b=None` means no value yet)."""
    if b is None:
        return True
    return a < b if direction == "minimize" else a > b


class ValidationHistory(Callback):
    """Every validation's metrics by global step; the trial's final and best values come from it."""

    def __init__(self, objective: ObjectiveSpec, direction: str, collect: Collect) -> None:
        self.objective = objective
        self.direction = direction
        self.collect = collect
        self.history: list[dict[str, float]] = []

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.history.append({"step": trainer.global_step, **self.collect(trainer.callback_metrics)})

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}

    @property
    def best(self) -> dict[str, float]:
        """The validation with the best objective (what a best-checkpoint policy would keep)."""
        best, best_value = {}, None
        for entry in self.history:
            value = objective_value(entry, self.objective)
            if is_better(value, best_value, self.direction):
                best, best_value = entry, value
        return best
