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
from harness.intervals import DEFAULT_RESAMPLES, sweep_comparisons
from harness.names import (
    BASELINE_ATTR,
    BASELINE_OWNER_ATTR,
    TEST_ATTR,
    TEST_BASELINE_ATTR,
    TEST_BASELINE_DIR,
    TEST_DIR,
    TEST_RUNNER_UP_ATTR,
    TEST_RUNNER_UP_DIR,
    run_name,
)
from harness.number_text import metrics_text, params_text
from harness.numerics import Numerics, cannot_recreate, figure_changes, probe
from harness.scoring import BLEU, WER
from harness.spec import SweepSpec
from harness.study import best_trial, no_best_reason, runner_up, trained_trial
from harness.sweep._process import Launcher, trial_result, worker_alive
from harness.tracking import BASELINE_ROLE, REPRODUCTION_ROLE, Tracker
from harness.trial import Result
from harness.trial_dir import TrialDir
from harness.trial_record import TrialRecord, model_params


@dataclass
class Reproduction:
    """A recorded trial re-run from its params and seed, and why its figures may not be the recorded ones."""

    trial: FrozenTrial
    figures: dict  # the reproduction's final figures
    differs: list[str]  # what it did not re-create (another device, versions, ...); empty: an exact reproduction


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
        """Score the best trial's checkpoint on the test manifest; log `test_*` on its run and the parent. Then the
        zero-shot baseline and the runner-up beside it, which the intervals compare it with (`log_intervals`)."""
        best = best_trial(self.study)
        if best is None or self.spec.data.test is None:
            return None
        metrics = self._test_trial(best, TEST_ATTR, TEST_DIR, "best_", run_name(best.number))
        if metrics is not None:
            self._test_baseline()
            runner = runner_up(self.study)  # kept where `training.keep_checkpoints` kept it
            if runner is not None:
                who = f"the runner-up {run_name(runner.number)}"
                self._test_trial(runner, TEST_RUNNER_UP_ATTR, TEST_RUNNER_UP_DIR, "runner_up_", who)
        return metrics

    def _test_trial(self, trial: FrozenTrial, attr: str, folder: str, prefix: str, who: str) -> dict | None:
        """`trial`'s kept checkpoint on the test set, once per trial: `test_*` on its run, `<prefix>test_*` on the
        parent, the figures in study attribute `attr` (the best trial and the runner-up alike)."""
        if self.study.user_attrs.get(attr, {}).get("trial") == trial.number:
            return self.study.user_attrs[attr]["metrics"]
        checkpoint, run_id = TrialDir.of(self.spec, trial.number).model, TrialRecord.of(trial).mlflow_run_id
        if not checkpoint.is_file() or run_id is None:
            kept = f"training.keep_checkpoints: {self.spec.training.keep_checkpoints}"
            why = f"no checkpoint kept ({kept})" if run_id else "no MLflow run recorded"
            self.log(f"[yellow]{who}: {why}; its test-set score skipped.[/]")
            return None
        self.log(f"Scoring {who} on the test set {self.spec.data.test} ...")
        result = self.run_blocking(
            TrialDir.of(self.spec, folder), run_id=run_id, mode="test", nemo=checkpoint, end_status=None
        )
        if result is None:
            return None
        self.tracker.log_metrics(self.parent_run, {f"{prefix}{k}": v for k, v in result.final.items()})
        self.study.set_user_attr(attr, {"trial": trial.number, "metrics": result.final})
        self.log(f"Test set ({who}): {metrics_text(result.final)}")
        return result.final

    def _test_baseline(self) -> None:
        """The pretrained model on the test set's plain copy, once per sweep: `test_*` on the baseline's run,
        `baseline_test_*` on the parent."""
        if TEST_BASELINE_ATTR in self.study.user_attrs:
            return
        children = self.tracker.children(self.parent_run)  # newest first
        runs = [r for r in children if r.data.tags.get("harness.role") == BASELINE_ROLE and r.info.status == "FINISHED"]
        if BASELINE_ATTR not in self.study.user_attrs or not runs:
            self.log("[yellow]No zero-shot baseline in this sweep; its test-set score skipped.[/]")
            return
        self.log(f"Scoring the pretrained model (zero-shot baseline) on the test set {self.spec.data.test} ...")
        result = self.run_blocking(
            TrialDir.of(self.spec, TEST_BASELINE_DIR),
            run_id=runs[0].info.run_id,
            mode="test_baseline",
            nemo=self.launcher.nemo,
            end_status=None,
        )
        if result is not None:
            self.tracker.log_metrics(self.parent_run, {f"baseline_{k}": v for k, v in result.final.items()})
            self.study.set_user_attr(TEST_BASELINE_ATTR, {"metrics": result.final})
            self.log(f"Test set (zero-shot baseline): {metrics_text(result.final)}")

    def log_intervals(self) -> None:
        """The best trial against the zero-shot baseline and the runner-up, on the validation and test sets:
        paired bootstrap intervals on the parent run (`ci_val_wer_vs_baseline_delta`, `_low`, `_high`; a pair's
        `ci_val_wer/en-en_vs_runner_up_low`), their resamples and seed as params, a console line each."""
        metrics: dict[str, float] = {}
        for c in sweep_comparisons(self.spec, self.study):
            where = "validation" if c.split == "val" else c.split
            if not c.intervals:
                self.log(f"[dim]No interval against {c.label} on the {where} set: {escape(c.missing)}.[/]")
                continue
            for figure, interval in c.intervals.items():
                name = f"ci_{c.split}_{figure}_vs_{c.other}"
                metrics |= {f"{name}_delta": interval.delta, f"{name}_low": interval.low, f"{name}_high": interval.high}
            overall = "; ".join(str(c.intervals[k]) for k in (WER, BLEU) if k in c.intervals)
            self.log(f"Best trial against {c.label}, {where} set (95% interval): {escape(overall)}")
        if not metrics:
            return
        self.tracker.log_metrics(self.parent_run, metrics)
        params = {"bootstrap_resamples": str(DEFAULT_RESAMPLES), "bootstrap_seed": str(self.spec.training.seed)}
        logged = self.tracker.client.get_run(self.parent_run).data.params
        if any(logged.get(k, v) != v for k, v in params.items()):  # MLflow keeps a param's first value
            self.log(f"[yellow]The parent run keeps its first bootstrap params; these intervals used {params}.[/]")
        self.tracker.log_params(self.parent_run, {k: v for k, v in params.items() if k not in logged})

    def reproduce(self, number: int | None) -> Reproduction:
        """Re-run a recorded trial from its stored params and seed in a new run tagged as a reproduction, with
        its recorded thread count; what it cannot re-create is said before it trains."""
        trial = self._complete_trial(number)
        name = run_name(trial.number)
        record = TrialRecord.of(trial)
        recorded = Numerics.of(record.numerics)
        seed = record.seed
        if seed is None:
            raise TrialsFailedError(f"{name} of sweep {self.spec.name} has no recorded seed; it cannot be reproduced.")
        run_id = self.tracker.child_run(
            self.parent_run,
            name=f"{name}-reproduction",
            role=REPRODUCTION_ROLE,
            params={**model_params(trial), "trial_number": trial.number, "seed": seed},
            tags={
                "harness.reproduction_of": name,
                "optuna.trial_number": str(trial.number),
                "mlflow.note.content": f"Reproduction of {name} from its recorded params and seed {seed}.",
            },
        )
        self.log(f"Reproducing {name}: {params_text(model_params(trial))} seed={seed}")
        differs = self._cannot_recreate(name, recorded, seed)
        trial_dir = TrialDir.of(self.spec, f"{name}-reproduction")
        result = self.run_blocking(
            trial_dir,
            run_id=run_id,
            mode="train",
            nemo=self.launcher.nemo,
            params=dict(trial.params),
            seed=seed,
            max_steps=self.spec.budget.max_steps if record.steps is None else record.steps,
            recreate=recorded,
            merge_alphas=() if record.merge_alpha is None else (record.merge_alpha,),  # merged as it was, no choice
        )
        if result is None:
            raise TrialsFailedError(f"The reproduction of {name} failed; see {trial_dir}.")
        ran = Numerics.of(result.numerics)
        if recorded is not None and ran is not None:  # what the process used, not what was foreseen
            differs = figure_changes(recorded, ran)
        return Reproduction(trial, {k: v for k, v in result.final.items() if k != "step"}, differs)

    def _cannot_recreate(self, name: str, recorded: Numerics | None, seed: int) -> list[str]:
        """Say, before training, what of `recorded` this machine cannot re-create (and so that the figures will
        differ); the phrases, or the one for a trial recorded before numerics were."""
        if recorded is None:
            threads = self.launcher.env(0).get("OMP_NUM_THREADS", "unset")
            self.log(
                f"[yellow]{name} was recorded without its numerics: threads were not recorded, so it runs with this "
                f"slot's (OMP_NUM_THREADS={threads}) and its figures may differ.[/]"
            )
            return ["threads, device and versions not recorded"]
        here = probe(self.spec.training, seed, self.launcher.env(0, recorded), recorded.threads)
        notes = cannot_recreate(recorded, here)
        if here is None:
            notes.append("this machine's numerics could not be read")
        if notes:
            self.log(
                f"[yellow]{name} cannot be re-created exactly here: {escape('; '.join(notes))}. Its figures will "
                "differ: read the reproduction as one more seed of the same setting.[/]"
            )
        else:
            self.log(
                f"Re-creating {name}'s numerics: {recorded.threads} thread(s), {recorded.device}, "
                f"{recorded.precision}, the same library versions."
            )
        return notes

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
        recreate: Numerics | None = None,
        merge_alphas: tuple[float, ...] | None = None,
    ) -> Result | None:
        """One process on slot 0, waited for; its run is closed unless `end_status` is None. `recreate`: a
        recorded trial's numerics whose threads the process runs with; `merge_alphas`: the merges it judges
        (`Launcher.start`)."""
        seed = self.spec.training.seed if seed is None else seed
        proc, log = self.launcher.start(
            trial_dir,
            params or {},
            run_id=run_id,
            seed=seed,
            max_steps=max_steps,
            slot=0,
            mode=mode,
            nemo=nemo,
            recreate=recreate,
            merge_alphas=merge_alphas,
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
