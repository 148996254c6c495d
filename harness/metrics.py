"""Validation metrics and the sweep objective.

NeMo logs `val_wer` (corpus WER as a 0..1 fraction, NaN when the set has no ASR samples) and
`val_bleu` (0..1, 0 when it has no translation samples). The objective is built from those,
never from `val_loss`, whose meaning changes with `use_loss_mask_for_prompt`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from lightning.pytorch import Callback

from harness.spec import ObjectiveSpec

TRACKED = ("val_wer", "val_bleu", "val_loss")


def scalar_metrics(callback_metrics: Mapping) -> dict[str, float]:
    """Plain floats of the validation metrics the harness tracks (tensors -> float)."""
    out = {}
    for key in TRACKED:
        if key in callback_metrics:
            out[key] = float(callback_metrics[key])
    return out


def objective_values(metrics: Mapping[str, float], objective: ObjectiveSpec) -> list[float]:
    """The numbers Optuna sees, one per objective. NaN (no samples for it) is an error, not a silent zero."""
    wer, bleu = metrics.get("val_wer", math.nan), metrics.get("val_bleu", math.nan)
    values = {
        "wer": [wer],
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

    def __init__(self, objective: ObjectiveSpec, direction: str) -> None:
        self.objective = objective
        self.direction = direction
        self.history: list[dict[str, float]] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self.history.append({"step": trainer.global_step, **scalar_metrics(trainer.callback_metrics)})

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
