"""The sweep supervisor: ask Optuna, run each trial in its own process, record the outcome.

Data flow: spec -> model source -> preflight -> study + parent run -> baseline -> trials ->
summary. The supervisor never imports NeMo; it only moves configs, processes and records.
Outcomes map one to one: COMPLETE/FINISHED, PRUNED/KILLED, FAIL/FAILED (with a reason).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from omegaconf import OmegaConf
from optuna.trial import TrialState
from rich.console import Console

from harness.canary import CheckpointInfo, inspect_checkpoint, trial_config
from harness.model_source import resolve_model
from harness.preflight import preflight
from harness.search_space import format_param, load_search_space
from harness.spec import SweepSpec
from harness.study import count_finished, open_study
from harness.tracking import BASELINE_ROLE, TRIAL_ROLE, Tracker, run_name
from harness.trial import Job, Result

LOG_TAIL_LINES = 200
PARENT_ATTR = "mlflow_parent_run_id"
BASELINE_ATTR = "baseline"


@dataclass
class Outcome:
    """How one trial ended, as the supervisor recorded it."""

    number: int
    state: TrialState
    value: float | None
    reason: str | None
    result: Result | None


class Supervisor:
    """Runs one sweep's trials on this machine until the budget is met."""

    def __init__(self, spec: SweepSpec, *, console: Console | None = None, worker: str = "main") -> None:
        self.spec = spec
        self.console = console or Console()
        self.worker = worker
        self.nemo = resolve_model(spec.model)
        self.info: CheckpointInfo = inspect_checkpoint(self.nemo)
        self.space = load_search_space(spec.search_space)
        preflight(spec, self.info)
        spec.state_dir.mkdir(parents=True, exist_ok=True)
        # Both databases exist before any trial process touches them (fresh SQLite schemas race).
        self.study = open_study(spec, worker=worker)
        self.tracker = Tracker(spec.tracking_uri, spec.experiment_name, artifact_root=spec.state_dir / "artifacts")
        self.parent_run = self.tracker.parent_run(
            self.study.user_attrs.get(PARENT_ATTR),
            sweep=spec.name,
            params=self._sweep_params(),
            tags={"optuna.study_name": spec.name, "optuna.storage": _redact(spec.storage_url)},
        )
        self.study.set_user_attr(PARENT_ATTR, self.parent_run)

    def _sweep_params(self) -> dict:
        b = self.spec.budget
        return {
            "model": self.spec.model, "checkpoint": self.nemo.name, "trials": b.trials, "max_steps": b.max_steps,
            "val_check_interval": b.val_check_interval, "objective": self.spec.objective.metric,
            "direction": self.spec.direction, "pruner": self.spec.pruner.type, "sampler": self.spec.sampler.type,
            "sampler_seed": self.spec.sampler.seed, "search_space": self.spec.search_space,
            "tokenizer": self.info.tokenizer_kind, "prompt_format": self.info.prompt_format,
        }

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> list[Outcome]:
        """Evaluate the baseline once, then run trials until the budget (trials or time) is met."""
        self.spec.trials_dir.mkdir(parents=True, exist_ok=True)
        self.baseline()
        deadline = None
        if self.spec.budget.timeout_minutes:
            deadline = time.monotonic() + 60 * self.spec.budget.timeout_minutes
        outcomes = []
        try:
            while count_finished(self.study) < self.spec.budget.trials:
                if deadline is not None and time.monotonic() > deadline:
                    self.console.print("[yellow]Wall-clock budget reached; stopping.[/]")
                    break
                outcomes.append(self.run_trial(self.study.ask(self.space)))
        except KeyboardInterrupt:
            self.tracker.end_run(self.parent_run, "KILLED")
            raise
        self._summarise()
        self.tracker.end_run(self.parent_run, "FINISHED")
        return outcomes

    def baseline(self) -> dict | None:
        """The pretrained model on the validation set, once per sweep, logged on the parent run."""
        if BASELINE_ATTR in self.study.user_attrs:
            return self.study.user_attrs[BASELINE_ATTR]
        self.console.print("Evaluating the pretrained model (zero-shot baseline)...")
        trial_dir = self.spec.trials_dir / "baseline"
        run_id = self.tracker.child_run(
            self.parent_run, name="baseline", role=BASELINE_ROLE, params={"model": self.spec.model}, tags={}
        )
        result, _ = self._launch(trial_dir, {}, run_id=run_id, seed=self.spec.training.seed, max_steps=0)
        if result is None or result.state != "complete":
            self.tracker.end_run(run_id, "FAILED")
            self.console.print(f"[red]Baseline evaluation failed; see {trial_dir / 'trial.log'}[/]")
            return None
        self.tracker.end_run(run_id, "FINISHED")
        metrics = {k: v for k, v in result.final.items() if k != "step"}
        self.tracker.log_metrics(self.parent_run, {f"baseline_{k}": v for k, v in metrics.items()})
        self.study.set_user_attr(BASELINE_ATTR, metrics)
        self.console.print(f"Baseline: {_fmt_metrics(metrics)}")
        return metrics

    def run_trial(self, trial: optuna.Trial) -> Outcome:
        """Launch one trial process and record its outcome in Optuna and MLflow."""
        number, params = trial.number, dict(trial.params)
        attempt = int(trial.user_attrs.get("attempt", 0))
        seed = self.spec.training.seed * 100_003 + number
        for key, value in {"seed": seed, "host": socket.gethostname(), "pid": os.getpid(), "worker": self.worker}.items():
            trial.set_user_attr(key, value)
        tags = {"optuna.study_name": self.spec.name, "optuna.trial_number": str(number)}
        if "retry_of" in trial.user_attrs:
            tags["optuna.retry_of"] = str(trial.user_attrs["retry_of"])
        run_id = self.tracker.child_run(
            self.parent_run, name=run_name(number), role=TRIAL_ROLE,
            params={**params, "trial_number": number, "seed": seed}, tags=tags,
        )
        trial.set_user_attr("mlflow_run_id", run_id)
        trial_dir = self.spec.trials_dir / run_name(number)
        self.console.print(f"[bold]{run_name(number)}[/] {_fmt_params(params)}")
        result, log = self._launch(trial_dir, params, run_id=run_id, seed=seed, max_steps=self.spec.budget.max_steps,
                                   trial_id=trial._trial_id, number=number)
        outcome = self._record(trial, result, log, run_id, attempt)
        self._print_outcome(outcome)
        return outcome

    def _launch(self, trial_dir: Path, params: dict, *, run_id: str, seed: int, max_steps: int,
                trial_id: int | None = None, number: int | None = None) -> tuple[Result | None, Path]:
        """Write the trial config and job, run the trial process, wait, and read its result."""
        trial_dir.mkdir(parents=True, exist_ok=True)
        (trial_dir / "result.json").unlink(missing_ok=True)
        cfg = trial_config(self.info.config, params, data=self.spec.data, training=self.spec.training,
                           budget=self.spec.budget, seed=seed)
        config_path = trial_dir / "config.yaml"
        OmegaConf.save(cfg, config_path)
        self.tracker.log_artifact(run_id, config_path, "config")
        Job(spec=self.spec.source, nemo=str(self.nemo), freeze=str(params.get("freeze", "none")), seed=seed,
            run_id=run_id, max_steps=max_steps, trial_id=trial_id, number=number).write(trial_dir)
        log = trial_dir / "trial.log"
        with log.open("w") as handle:
            proc = subprocess.Popen([sys.executable, "-m", "harness.trial", str(trial_dir)],
                                    stdout=handle, stderr=subprocess.STDOUT, env=self._trial_env())
            try:
                code = proc.wait()
            except KeyboardInterrupt:
                proc.terminate()
                proc.wait()
                self._abandon(trial_id, run_id, "interrupted")
                raise
        result = Result.read(trial_dir)
        if result is None:
            result = Result(state="fail", reason=_exit_reason(code))
        return result, log

    def _trial_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _record(self, trial: optuna.Trial, result: Result, log: Path, run_id: str, attempt: int) -> Outcome:
        """Tell Optuna and close the MLflow run with the matching status; re-queue failures."""
        number = trial.number
        if result.final:
            trial.set_user_attr("final", {k: v for k, v in result.final.items() if k != "step"})
            trial.set_user_attr("steps", result.steps)
        if result.state == "complete":
            self.study.tell(trial, result.objective)
            self.tracker.end_run(run_id, "FINISHED")
            return Outcome(number, TrialState.COMPLETE, result.objective, None, result)
        if result.state == "pruned":
            trial.set_user_attr("pruned_at", result.pruned_at)
            self.study.tell(trial, state=TrialState.PRUNED)
            self.tracker.end_run(run_id, "KILLED")
            return Outcome(number, TrialState.PRUNED, result.objective, f"pruned at step {result.pruned_at}", result)
        trial.set_user_attr("fail_reason", result.reason)
        self.tracker.set_tags(run_id, {"harness.fail_reason": str(result.reason)[:250]})
        self.tracker.log_artifact(run_id, _write_tail(log), "logs")
        self.study.tell(trial, state=TrialState.FAIL)
        self.tracker.end_run(run_id, "FAILED")
        if attempt < self.spec.budget.max_retries:
            self.study.enqueue_trial(trial.params, user_attrs={"retry_of": number, "attempt": attempt + 1})
        return Outcome(number, TrialState.FAIL, None, result.reason, result)

    def _abandon(self, trial_id: int | None, run_id: str, reason: str) -> None:
        """Ctrl-C: nothing stays RUNNING; the trial is FAIL (retried next time) and its run KILLED."""
        self.tracker.end_run(run_id, "KILLED")
        if trial_id is None:
            return
        trial = optuna.Trial(self.study, trial_id)
        trial.set_user_attr("fail_reason", reason)
        self.study.tell(trial, state=TrialState.FAIL)
        self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number, "attempt": 0})

    # -- output -----------------------------------------------------------------------------

    def _print_outcome(self, outcome: Outcome) -> None:
        name = run_name(outcome.number)
        if outcome.state == TrialState.COMPLETE:
            metrics = {k: v for k, v in outcome.result.final.items() if k != "step"}
            self.console.print(f"  {name} [green]COMPLETE[/] objective={outcome.value:.4f} {_fmt_metrics(metrics)}")
        elif outcome.state == TrialState.PRUNED:
            self.console.print(f"  {name} [yellow]PRUNED[/] ({outcome.reason})")
        else:
            self.console.print(f"  {name} [red]FAIL[/] {outcome.reason}")
        done = count_finished(self.study)
        best = self.best_trial()
        best_text = f", best so far {run_name(best.number)} = {best.value:.4f}" if best else ""
        self.console.print(f"  [dim]{done}/{self.spec.budget.trials} trials done{best_text}[/]")

    def best_trial(self) -> optuna.trial.FrozenTrial | None:
        complete = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return self.study.best_trial if complete else None

    def _summarise(self) -> None:
        """Best-trial summary metrics on the parent run (search_runs shows last values, not best)."""
        best = self.best_trial()
        if best is None:
            return
        self.tracker.log_metrics(self.parent_run, {"best_objective": best.value, "best_trial_number": best.number})
        self.tracker.set_tags(self.parent_run, {"harness.best_trial": run_name(best.number)})


def _exit_reason(code: int) -> str:
    """Why a trial process died without writing its result (kill -9, segfault, ...)."""
    from harness.trial import EXIT_OOM

    if code == EXIT_OOM:
        return "oom"
    if code < 0:
        return "killed" if -code == 9 else f"killed by signal {-code}"
    return f"error: exit code {code}"


def _write_tail(log: Path) -> Path:
    tail = log.with_name("trial-log-tail.txt")
    lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:] if log.exists() else []
    tail.write_text("\n".join(lines) + "\n")
    return tail


def _redact(url: str) -> str:
    """Storage URLs may carry passwords; MLflow tags must not."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def _fmt_params(params: dict) -> str:
    return " ".join(f"{k}={format_param(v)}" for k, v in params.items())


def _fmt_metrics(metrics: dict) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
