"""A trial's validation history: every validation's figures by step, and its final and best values.

The figures are the objective's inputs (`harness.objective`); "best" is the objective's best in the study's
direction. A Lightning callback, so only the trial process imports this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from lightning.pytorch import Callback, LightningModule, Trainer

from harness.directions import Direction
from harness.objective import objective_value
from harness.spec import ObjectiveSpec

Collect = Callable[[Mapping], dict]  # trainer.callback_metrics -> {name: float}


def logged_loss(callback_metrics: Mapping) -> dict[str, float]:
    """`val_loss` as a float: the one figure of NeMo's own logging the harness keeps."""
    return {"val_loss": float(callback_metrics["val_loss"])} if "val_loss" in callback_metrics else {}


class ValidationHistory(Callback):
    """Every validation's metrics by global step; the trial's final and best values come from it."""

    def __init__(self, objective: ObjectiveSpec, direction: Direction, collect: Collect) -> None:
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
            if self.direction.better(value, best_value):
                best, best_value = entry, value
        return best
