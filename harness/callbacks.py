"""The Lightning callbacks through which a trial process reports: Optuna, MLflow, progress file.

Under DDP every rank runs them; only global rank 0 writes (figures are gathered from all ranks first).
They live apart from `study`, `tracking` and `progress` so that the supervisor, which imports
those, never imports Lightning or torch: it stays a small process (see benchmarks/memory.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

import optuna
from lightning.pytorch import Callback, LightningModule, Trainer

from harness.metrics import Collect
from harness.progress import write_progress
from harness.tracking import Tracker
from harness.trial_dir import TrialDir


class PruningReporter(Callback):
    """Report the objective after each validation at `global_step`; stop training when pruned.

    Stopping via `trainer.should_stop` (not by raising TrialPruned) lets Lightning end cleanly,
    so the trial's MLflow run can be marked KILLED rather than FAILED. The last validation is
    reported but never prunes: the training is already spent, so the trial completes with its value.
    Under DDP only global rank 0 talks to Optuna, and its decision is broadcast: a rank that did not
    learn of the prune would wait forever in the next gradient all-reduce.
    """

    def __init__(self, trial: optuna.Trial | None, objective: Callable[[Mapping], float]) -> None:
        self.trial = trial
        self.objective = objective
        self.pruned_at: int | None = None

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.global_step == 0:
            return
        pruned = trainer.is_global_zero and self._report_and_decide(trainer)
        if trainer.world_size > 1:
            pruned = trainer.strategy.broadcast(pruned, src=0)
        if pruned:
            self.pruned_at = trainer.global_step
            trainer.should_stop = True

    def _report_and_decide(self, trainer) -> bool:
        assert self.trial is not None, "rank 0 reports with its trial handle"
        value = self.objective(trainer.callback_metrics)
        if math.isnan(value):
            return False
        self.trial.report(value, step=trainer.global_step)
        return trainer.global_step < trainer.max_steps and self.trial.should_prune()


class MetricsLogger(Callback):
    """Log every validation's metrics to the trial's MLflow run at `step=global_step`."""

    def __init__(self, tracker: Tracker, run_id: str, collect: Collect) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self.collect = collect

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        self.tracker.log_metrics(self.run_id, self.collect(trainer.callback_metrics), step=trainer.global_step)


class ProgressWriter(Callback):
    """Publish step and last validation metrics for the supervisor's live view."""

    def __init__(self, trial_dir: TrialDir, max_steps: int, collect: Collect) -> None:
        self.trial_dir = trial_dir
        self.max_steps = max_steps
        self.collect = collect
        self.started: float | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.started = time.monotonic()  # the supervisor's per-trial ETA leaves the restore out

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking and trainer.is_global_zero:
            elapsed = None if self.started is None else time.monotonic() - self.started
            metrics = self.collect(trainer.callback_metrics)
            write_progress(self.trial_dir, trainer.global_step, self.max_steps, metrics, elapsed)
