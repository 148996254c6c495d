"""The runs beside the trials: the zero-shot baseline, the best checkpoint on the test set, a reproduction.

Each is one process on slot 0 that the supervisor waits for; `in_flight` names it while it runs,
so a stop (Ctrl-C, SIGTERM) can end it and its MLflow run.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.markup import escape

from harness.errors import NoFeasibleTrialError, TrialsFailedError, UsageError
from harness.names import BASELINE_ATTR, BASELINE_OWNER_ATTR, TEST_ATTR, run_name
from harness.number_text import metrics_text, params_text
from harness.spec import SweepSpec
from harness.study import best_trial, no_best_reason, trained_trial
from harness.sweep._process import Launcher, trial_result, worker_alive
from harness.tracking import BASELINE_ROLE, REPRODUCTION_ROLE, Tracker
from harness.trial import Result
from harness.trial_dir import TrialDir
from harness.trial_record import TrialRecord


@dataclass
class Evaluations:
    """Baseline, test set and reproduction runs of one sweep."""

    spec: SweepSpec
    study: optuna.Study
    tracker: Tracker
    parent_run: str
    launcher: Launcher
    worker: str
    log: Callable[[str], None]
    in_flight: tuple[subprocess.Popen, str, str] | None = None  # (process, run id, what) being waited for

    def baseline(self) -> dict | None:
        """The pretrained model on the validation set (and the retention sets), once per sweep, logged on the
        parent run (`baseline_val_wer`, `baseline_retention_wer`)."""
        if BASELINE_ATTR in self.study.user_attrs or not self.spec.budget.baseline:
            return self.study.user_attrs.get(BASELINE_ATTR)
        owner = self.study.user_attrs.get(BASELINE_OWNER_ATTR)
        if owner not in (None, self.worker) and worker_alive(owner):
            return None  # another worker of this sweep is evaluating it
        self.study.set_user_attr(BASELINE_OWNER_ATTR, self.worker)
        self.log("Evaluating the pretrained model (zero-shot baseline)...")
        run_id = self.tracker.child_run(
            self.parent_run, name="baseline", role=BASELINE_ROLE, params={"model": self.spec.model}, tags={}
        )
        result = self.run_blocking(
            TrialDir.of(self.spec, "baseline"), run_id=run_id, mode="baseline", nemo=self.launcher.nemo
        )
        if result is None:
            return None
        metrics = {k: v for k, v in result.final.items() if k != "step"}
        self.tracker.log_metrics(self.parent_run, {f"baseline_{k}": v for k, v in metrics.items()})
        self.study.set_user_attr(BASELINE_ATTR, metrics)
        self.log(f"Baseline (zero-shot): {metrics_text(metrics)}")
        return metrics

    def test_best(self) -> dict | None:
        """Score the best trial's checkpoint on the test manifest; log `test_*` on its run and the parent."""
        best = best_trial(self.study)
        if best is None or self.spec.data.test is None:
            return None
        if self.study.user_attrs.get(TEST_ATTR, {}).get("trial") == best.number:
            return self.study.user_attrs[TEST_ATTR]["metrics"]
        checkpoint = TrialDir.of(self.spec, best.number).model
        if not checkpoint.is_file():
            self.log(f"[yellow]No checkpoint of {run_name(best.number)} here ({checkpoint}); test set skipped.[/]")
            return None
        self.log(f"Scoring {run_name(best.number)} on the test set {self.spec.data.test} ...")
        run_id = TrialRecord.of(best).mlflow_run_id
        if run_id is None:
            self.log(f"[yellow]{run_name(best.number)} has no MLflow run recorded; test set skipped.[/]")
            return None
        result = self.run_blocking(
            TrialDir.of(self.spec, "test"), run_id=run_id, mode="test", nemo=checkpoint, end_status=None
        )
        if result is None:
            return None
        self.tracker.log_metrics(self.parent_run, {f"best_{k}": v for k, v in result.final.items()})
        self.study.set_user_attr(TEST_ATTR, {"trial": best.number, "metrics": result.final})
        self.log(f"Test set ({run_name(best.number)}): {metrics_text(result.final)}")
        return result.final

    def reproduce(self, number: int | None) -> tuple[FrozenTrial, dict]:
        """Re-run a recorded trial from its stored params and seed in a new run tagged as a reproduction."""
        trial = self._complete_trial(number)
        name = run_name(trial.number)
        record = TrialRecord.of(trial)
        seed = record.seed
        if seed is None:
            raise TrialsFailedError(f"{name} of sweep {self.spec.name} has no recorded seed; it cannot be reproduced.")
        run_id = self.tracker.child_run(
            self.parent_run,
            name=f"{name}-reproduction",
            role=REPRODUCTION_ROLE,
            params={**trial.params, "trial_number": trial.number, "seed": seed},
            tags={
                "harness.reproduction_of": name,
                "optuna.trial_number": str(trial.number),
                "mlflow.note.content": f"Reproduction of {name} from its recorded params and seed {seed}.",
            },
        )
        self.log(f"Reproducing {name}: {params_text(trial.params)} seed={seed}")
        trial_dir = TrialDir.of(self.spec, f"{name}-reproduction")
        result = self.run_blocking(
            trial_dir,
            run_id=run_id,
            mode="train",
            nemo=self.launcher.nemo,
            params=dict(trial.params),
            seed=seed,
            max_steps=self.spec.budget.max_steps if record.steps is None else record.steps,
        )
        if result is None:
            raise TrialsFailedError(f"The reproduction of {name} failed; see {trial_dir}.")
        return trial, {k: v for k, v in result.final.items() if k != "step"}

    def _complete_trial(self, number: int | None) -> FrozenTrial:
        complete = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        trial = best_trial(self.study) if number is None else next((t for t in complete if t.number == number), None)
        if trial is None and number is None:
            raise NoFeasibleTrialError(
                f"Sweep {self.spec.name} has no best trial to reproduce ({no_best_reason(self.study)}); "
                "pass `--trial N` to re-run a complete one."
            )
        if trial is None:
            known = ", ".join(str(t.number) for t in complete) or "none yet"
            raise UsageError(
                f"Trial {number} of sweep {self.spec.name} did not complete (completed trial numbers: {known})."
            )
        return trained_trial(self.study, trial)  # a repeat trained nothing: reproduce the trial it repeats

    def run_blocking(
        self,
        trial_dir: TrialDir,
        *,
        run_id: str,
        mode: str,
        nemo: Path,
        params: dict | None = None,
        seed: int | None = None,
        max_steps: int = 0,
        end_status: str | None = "FINISHED",
    ) -> Result | None:
        """One process on slot 0, waited for; its run is closed unless `end_status` is None."""
        seed = self.spec.training.seed if seed is None else seed
        proc, log = self.launcher.start(
            trial_dir, params or {}, run_id=run_id, seed=seed, max_steps=max_steps, slot=0, mode=mode, nemo=nemo
        )
        self.in_flight = (proc, run_id, "zero-shot baseline" if mode == "baseline" else f"{mode} run")
        try:
            code = proc.wait()
        finally:
            log.close()
        self.in_flight = None
        result = trial_result(trial_dir, code, self.spec.training.devices)
        if result.state != "complete":
            if end_status is not None:
                self.tracker.end_run(run_id, "FAILED")
            self.log(f"[red]{mode} evaluation failed ({escape(str(result.reason))}); see {trial_dir.log}[/]")
            return None
        if end_status is not None:
            self.tracker.end_run(run_id, end_status)
        return result
