"""The sweep supervisor: ask Optuna, run each trial in its own process, record the outcome.

Data flow: spec -> model source -> preflight -> study + parent run -> baseline -> trials ->
summary. The supervisor never imports NeMo; it moves configs, processes and records. It runs
up to `slots` trials at once (one per GPU, or N CPU workers), keeps a heartbeat on each, and on
start fails and re-queues trials whose supervisor died. Outcomes map one to one:
COMPLETE/FINISHED, PRUNED/KILLED, FAIL/FAILED (with a reason).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import optuna
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from harness.behaviours import write_prompted_manifests
from harness.canary import CheckpointInfo, extract_tokenizers, inspect_checkpoint, released_overrides, trial_config
from harness.errors import HarnessError
from harness.model_source import resolve_model
from harness.preflight import preflight
from harness.progress import SweepView
from harness.records import check_records, open_records
from harness.search_space import format_param, load_search_space
from harness.spec import SweepSpec
from harness.stopping import INTERRUPTED, TERMINATED, Stopped, reason_of, shielded, stop_requests
from harness.stores import redact
from harness.study import best_trial, primary_value
from harness.tracking import BASELINE_ROLE, REPRODUCTION_ROLE, TRIAL_ROLE, run_name
from harness.trial import EXIT_OOM, MODEL_FILE, Job, Result
from harness.trial_record import TrialRecord

LOG_TAIL_LINES = 200
BASELINE_ATTR = "baseline"
TEST_ATTR = "test"
POLL_SECONDS = 0.25  # how soon a finished trial is noticed (its slot idles until then)
VIEW_SECONDS = 1.0  # the live view queries the study at most this often
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 600.0  # a RUNNING trial on another host with no heartbeat for this long is dead
SUPERVISOR_DIED = "killed: its supervisor died"
SUPERVISOR_REASONS = (INTERRUPTED, TERMINATED, SUPERVISOR_DIED)  # fail reasons that are not the trial's own
SAME_FAILURES_TO_STOP = 3
STOP_GRACE_SECONDS = 10.0  # a trial process gets this long to exit on SIGTERM (Slurm's KillWait is 30 s)


@dataclass
class Outcome:
    """How one trial ended, as the supervisor recorded it."""

    number: int
    state: TrialState
    value: float | None
    reason: str | None
    result: Result | None


@dataclass
class Running:
    """A trial process in flight."""

    trial: optuna.Trial
    proc: subprocess.Popen
    trial_dir: Path
    run_id: str
    attempt: int
    slot: int
    log: IO
    started: float = field(default_factory=time.monotonic)
    beat: float = 0.0


def visible_gpus() -> int:
    """CUDA devices torch would see, counted in a child process: the supervisor never imports torch
    (it would hold ~450 MiB more for the whole sweep). Without a GPU driver there is nothing to ask."""
    if not (Path("/proc/driver/nvidia/gpus").is_dir() or Path("/dev/kfd").exists() or shutil.which("nvidia-smi")):
        return 0
    probe = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"], capture_output=True, text=True
    )
    return int(probe.stdout.strip() or 0) if probe.returncode == 0 else 0


def default_slots(workers: int | None) -> list[dict[str, str]]:
    """Environment per slot: one per visible GPU (pinned), else `workers` CPU slots sharing the cores.

    A scheduler's own CUDA_VISIBLE_DEVICES (Slurm's `2,3`) is respected: slots pin its entries."""
    gpus = visible_gpus()
    count = workers or max(1, gpus)
    if gpus:
        given = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        ids = given[:gpus] if len(given) >= gpus else [str(i) for i in range(gpus)]
        return [{"CUDA_VISIBLE_DEVICES": ids[i % gpus]} for i in range(count)]
    threads = str(max(1, (os.cpu_count() or 1) // count))
    return [{"OMP_NUM_THREADS": threads} for _ in range(count)]


class Supervisor:
    """Runs one sweep's trials on this machine until the budget is met."""

    def __init__(
        self,
        spec: SweepSpec,
        *,
        console: Console | None = None,
        worker: str | None = None,
        slots: list[dict[str, str]] | None = None,
    ) -> None:
        self.spec = spec
        self.console = console or Console()
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        self.slots = slots if slots is not None else default_slots(None)
        self.space = load_search_space(spec.search_space)
        # A bad or mismatched store fails in seconds, before the model is fetched and the data checked.
        check_records(spec, self.space)
        self.nemo = resolve_model(spec.model)
        self.info: CheckpointInfo = inspect_checkpoint(self.nemo)
        preflight(spec, self.info)
        self.data = write_prompted_manifests(spec)  # the user's manifests, or copies with behaviour tokens
        # Both stores exist before any trial process touches them; the study and its parent run are linked.
        records = open_records(
            spec,
            self.space,
            params=self._sweep_params(),
            tags={"optuna.study_name": spec.name, "optuna.storage": redact(spec.storage_url)},
        )
        self.study, self.tracker, self.parent_run = records.study, records.tracker, records.parent_run
        self.view = SweepView(self.console, name=spec.name, budget=spec.budget.trials)
        self._view_refreshed = 0.0
        self._running: dict[int, Running] = {}  # slot -> trial process in flight
        self._blocking: tuple[subprocess.Popen, str, str] | None = None  # (process, run id, what) waited for
        self._parent_open = False  # the parent run is RUNNING because of this supervisor

    def _sweep_params(self) -> dict:
        b = self.spec.budget
        return {
            "model": self.spec.model,
            "checkpoint": self.nemo.name,
            "trials": b.trials,
            "max_steps": b.max_steps,
            "val_check_interval": b.val_check_interval,
            "objective": self.spec.objective.metric,
            "direction": self.spec.direction,
            "pruner": self.spec.pruner.type,
            "sampler": self.spec.sampler.type,
            "sampler_seed": self.spec.sampler.seed,
            "search_space": self.spec.search_space,
            "tokenizer": self.info.tokenizer_kind,
            "prompt_format": self.info.prompt_format,
            "custom_tokens": ", ".join(
                f"{name}={b.on}/{b.off} ({b.field})" for name, b in sorted(self.spec.custom_tokens.items())
            )
            or "none",
        }

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> list[Outcome]:
        """Reconcile dead trials, evaluate the baseline once, then fill the slots until the budget is met.

        Ctrl-C or SIGTERM at any point (baseline, trials, test set) stops the processes in flight
        and records them (`_record_stop`); the `Stopped` raised says what was recorded."""
        self._parent_open = True
        with self._stoppable():
            self.spec.trials_dir.mkdir(parents=True, exist_ok=True)
            self.tracker.client.update_run(self.parent_run, status="RUNNING")
            self._note_reset_keys()
            self.reconcile()
            self.baseline()
            outcomes = self._fill_slots()
            self.test_best()
            self._summarise()
            self.tracker.end_run(self.parent_run, "FINISHED")
        return outcomes

    def _fill_slots(self) -> list[Outcome]:
        """Start trials while the budget, the clock and the failures allow; record each as it ends."""
        deadline = None
        if self.spec.budget.timeout_minutes:
            deadline = time.monotonic() + 60 * self.spec.budget.timeout_minutes
        outcomes: list[Outcome] = []
        hopeless = None
        with self.view:
            while True:
                out_of_time = deadline is not None and time.monotonic() > deadline
                for slot in range(len(self.slots)):
                    if (
                        slot in self._running
                        or out_of_time
                        or hopeless
                        or self.budget_used() >= self.spec.budget.trials
                    ):
                        continue
                    self._running[slot] = self._start(self.study.ask(self.space), slot)
                if not self._running:
                    break
                time.sleep(POLL_SECONDS)
                for slot, job in list(self._running.items()):
                    if job.proc.poll() is None:
                        self._heartbeat(job)
                        continue
                    del self._running[slot]
                    outcomes.append(self._finish(job))
                    hopeless = hopeless or self._repeated_failure()
                self._refresh(self._running)
        if deadline is not None and time.monotonic() > deadline:
            self.view.log("[yellow]Wall-clock budget reached; stopped starting trials.[/]")
        if hopeless:
            self._give_up(hopeless)
        return outcomes

    def _repeated_failure(self) -> FrozenTrial | None:
        """The latest failed trial, once the sweep's first `SAME_FAILURES_TO_STOP` decided trials all
        failed with one reason: a setting every trial trips on (a bad path, OOM at every size) should
        not spend the whole budget. Stops recorded by a supervisor (Ctrl-C, SIGTERM) do not count."""
        decided = self.study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        )
        failures = [t for t in decided if TrialRecord.of(t).fail_reason not in SUPERVISOR_REASONS]
        if len(failures) < SAME_FAILURES_TO_STOP or any(t.state != TrialState.FAIL for t in failures):
            return None
        if len({TrialRecord.of(t).fail_reason for t in failures}) != 1:
            return None
        return max(failures, key=lambda t: t.number)

    def _give_up(self, last: FrozenTrial) -> None:
        """End the sweep's parent run FAILED and raise the one error every trial hit."""
        reason = str(TrialRecord.of(last).fail_reason)
        hint = (
            "lower `batch_duration` in the search space or freeze more of the model"
            if reason == "oom"
            else "fix what the log shows"
        )
        self.tracker.set_tags(self.parent_run, {"harness.fail_reason": reason[:250]})
        self.tracker.end_run(self.parent_run, "FAILED")
        self._parent_open = False
        log = self.spec.trials_dir / run_name(last.number) / "trial.log"
        raise HarnessError(
            f"Stopped early: the first {SAME_FAILURES_TO_STOP} trials of sweep {self.spec.name} all failed with "
            f"the same error ({reason}); {hint} ({log}), then run the same command to resume."
        )

    @contextlib.contextmanager
    def _stoppable(self) -> Iterator[None]:
        """Ctrl-C and SIGTERM inside: everything in flight is stopped and recorded before `Stopped`."""
        with stop_requests():
            try:
                yield
            except KeyboardInterrupt as stop:
                with shielded():
                    raise self._record_stop(reason_of(stop)) from None

    def _record_stop(self, reason: str) -> Stopped:
        """Stop the trial processes (FAIL, re-queued) and any evaluation in flight; end their runs KILLED."""
        stopped = []
        for job in list(self._running.values()):
            self._abandon(job, reason)
            stopped.append(f"{run_name(job.trial.number)} (FAIL: {reason}, re-queued)")
        self._running.clear()
        if self._blocking is not None:
            proc, run_id, what = self._blocking
            _stop_process(proc)
            self.tracker.end_run(run_id, "KILLED")
            stopped.append(f"the {what} (its run KILLED)")
            self._blocking = None
        if self._parent_open:
            self.tracker.end_run(self.parent_run, "KILLED")
            self._parent_open = False
            stopped.append("the sweep's parent run KILLED")
        how = "Terminated (SIGTERM)" if reason == TERMINATED else "Interrupted"
        done = "; ".join(stopped) if stopped else "nothing was running"
        return Stopped(reason, f"{how}: recorded {done}. Run the same command to resume.")

    def _note_reset_keys(self) -> None:
        """Say once per sweep which released-config keys config surgery resets (they would bypass trials)."""
        reset = released_overrides(self.info.config)
        if reset:
            self.view.log(
                f"[dim]The checkpoint's config carries keys that would bypass the trial; reset: {', '.join(reset)}[/]"
            )

    def budget_used(self) -> int:
        """Trials that count against the budget: decided ones (a re-queued failure does not) and running ones."""
        used = 0
        for t in self.study.get_trials(deepcopy=False):
            if (
                t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
                or t.state == TrialState.FAIL
                and not TrialRecord.of(t).requeued
            ):
                used += 1
        return used

    def baseline(self) -> dict | None:
        """The pretrained model on the validation set, once per sweep, logged on the parent run."""
        if BASELINE_ATTR in self.study.user_attrs or not self.spec.budget.baseline:
            return self.study.user_attrs.get(BASELINE_ATTR)
        owner = self.study.user_attrs.get(BASELINE_ATTR + "_by")
        if owner not in (None, self.worker) and _worker_alive(owner):
            return None  # another worker of this sweep is evaluating it
        self.study.set_user_attr(BASELINE_ATTR + "_by", self.worker)
        self.view.log("Evaluating the pretrained model (zero-shot baseline)...")
        run_id = self.tracker.child_run(
            self.parent_run, name="baseline", role=BASELINE_ROLE, params={"model": self.spec.model}, tags={}
        )
        result = self._run_blocking(self.spec.trials_dir / "baseline", run_id=run_id, mode="baseline", nemo=self.nemo)
        if result is None:
            return None
        metrics = {k: v for k, v in result.final.items() if k != "step"}
        self.tracker.log_metrics(self.parent_run, {f"baseline_{k}": v for k, v in metrics.items()})
        self.study.set_user_attr(BASELINE_ATTR, metrics)
        self.view.log(f"Baseline (zero-shot): {_fmt_metrics(metrics)}")
        return metrics

    def test_best(self) -> dict | None:
        """Score the best trial's checkpoint on the test manifest; log `test_*` on its run and the parent."""
        best = self.best_trial()
        if best is None or self.spec.data.test is None:
            return None
        if self.study.user_attrs.get(TEST_ATTR, {}).get("trial") == best.number:
            return self.study.user_attrs[TEST_ATTR]["metrics"]
        checkpoint = self.spec.trials_dir / run_name(best.number) / MODEL_FILE
        if not checkpoint.is_file():
            self.view.log(f"[yellow]No checkpoint of {run_name(best.number)} here ({checkpoint}); test set skipped.[/]")
            return None
        self.view.log(f"Scoring {run_name(best.number)} on the test set {self.spec.data.test} ...")
        run_id = TrialRecord.of(best).mlflow_run_id
        result = self._run_blocking(
            self.spec.trials_dir / "test", run_id=run_id, mode="test", nemo=checkpoint, end_status=None
        )
        if result is None:
            return None
        self.tracker.log_metrics(self.parent_run, {f"best_{k}": v for k, v in result.final.items()})
        self.study.set_user_attr(TEST_ATTR, {"trial": best.number, "metrics": result.final})
        self.view.log(f"Test set ({run_name(best.number)}): {_fmt_metrics(result.final)}")
        return result.final

    def _run_blocking(
        self,
        trial_dir: Path,
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
        proc, log = self._spawn(
            trial_dir, params or {}, run_id=run_id, seed=seed, max_steps=max_steps, slot=0, mode=mode, nemo=nemo
        )
        self._blocking = (proc, run_id, "zero-shot baseline" if mode == "baseline" else f"{mode} run")
        try:
            code = proc.wait()
        finally:
            log.close()
        self._blocking = None
        result = Result.read(trial_dir) or Result(state="fail", reason=_exit_reason(code))
        if result.state != "complete":
            if end_status is not None:
                self.tracker.end_run(run_id, "FAILED")
            self.view.log(f"[red]{mode} evaluation failed ({result.reason}); see {trial_dir / 'trial.log'}[/]")
            return None
        if end_status is not None:
            self.tracker.end_run(run_id, end_status)
        return result

    def reproduce(self, number: int | None) -> tuple[FrozenTrial, dict]:
        """Re-run a recorded trial from its stored params and seed in a new run tagged as a reproduction."""
        complete = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        trial = self.best_trial() if number is None else next((t for t in complete if t.number == number), None)
        if trial is None:
            known = ", ".join(str(t.number) for t in complete) or "none yet"
            raise HarnessError(
                f"Trial {number} of sweep {self.spec.name} did not complete (completed trial numbers: {known})."
            )
        name = run_name(trial.number)
        record = TrialRecord.of(trial)
        seed = record.seed
        if seed is None:
            raise HarnessError(f"{name} of sweep {self.spec.name} has no recorded seed; it cannot be reproduced.")
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
        self.view.log(f"Reproducing {name}: {_fmt_params(trial.params)} seed={seed}")
        with self._stoppable():
            result = self._run_blocking(
                self.spec.trials_dir / f"{name}-reproduction",
                run_id=run_id,
                mode="train",
                nemo=self.nemo,
                params=dict(trial.params),
                seed=seed,
                max_steps=self.spec.budget.max_steps if record.steps is None else record.steps,
            )
        if result is None:
            raise HarnessError(
                f"The reproduction of {name} failed; see {self.spec.trials_dir / (name + '-reproduction')}."
            )
        return trial, {k: v for k, v in result.final.items() if k != "step"}

    def _prune_checkpoints(self) -> None:
        """Keep only the best trial's checkpoint (the Pareto front's, for `pareto`), per `training.keep_checkpoints`."""
        if self.spec.training.keep_checkpoints == "all":
            return
        keep = set()
        if self.spec.training.keep_checkpoints == "best" and self.best_trial() is not None:
            front = self.study.best_trials if self.spec.multi_objective else [self.best_trial()]
            keep = {t.number for t in front}
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.number not in keep:
                (self.spec.trials_dir / run_name(t.number) / MODEL_FILE).unlink(missing_ok=True)

    def _start(self, trial: optuna.Trial, slot: int) -> Running:
        """Create the trial's MLflow run and start its process."""
        number, params = trial.number, dict(trial.params)
        seed = self.spec.training.seed * 100_003 + number
        TrialRecord.write(
            trial, seed=seed, host=socket.gethostname(), pid=os.getpid(), worker=self.worker, heartbeat=time.time()
        )
        tags = {"optuna.study_name": self.spec.name, "optuna.trial_number": str(number)}
        record = TrialRecord.of(trial)
        if record.retry_of is not None:
            tags["optuna.retry_of"] = str(record.retry_of)
        run_id = self.tracker.child_run(
            self.parent_run,
            name=run_name(number),
            role=TRIAL_ROLE,
            params={**params, "trial_number": number, "seed": seed},
            tags=tags,
        )
        TrialRecord.write(trial, mlflow_run_id=run_id)
        trial_dir = self.spec.trials_dir / run_name(number)
        self.view.log(f"[bold]{run_name(number)}[/] started: {_fmt_params(params)}")
        proc, log = self._spawn(
            trial_dir,
            params,
            run_id=run_id,
            seed=seed,
            max_steps=self.spec.budget.max_steps,
            slot=slot,
            trial_id=trial._trial_id,
            number=number,
        )
        TrialRecord.write(trial, trial_pid=proc.pid)
        return Running(trial, proc, trial_dir, run_id, record.attempt, slot, log)

    def _spawn(
        self,
        trial_dir: Path,
        params: dict,
        *,
        run_id: str,
        seed: int,
        max_steps: int,
        slot: int,
        trial_id: int | None = None,
        number: int | None = None,
        mode: str = "train",
        nemo: Path | None = None,
    ) -> tuple[subprocess.Popen, IO]:
        """Write the trial config and job, and start `python -m harness.trial` on its slot."""
        trial_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("result.json", "progress.json"):
            (trial_dir / stale).unlink(missing_ok=True)
        # The baseline is the model as released: the user's manifests, without behaviour tokens it never learnt.
        released = mode == "baseline"
        cfg = trial_config(
            self.info.config,
            params,
            data=self.spec.data if released else self.data,
            training=self.spec.training,
            budget=self.spec.budget,
            seed=seed,
            custom_tokens=None if released else self.spec.custom_tokens,
        )
        if self.spec.training.tokenizers == "extract":
            extract_tokenizers(self.nemo, cfg, trial_dir / "tokenizers")
        config_path = trial_dir / "config.yaml"
        OmegaConf.save(cfg, config_path)
        self.tracker.log_artifact(run_id, config_path, "config")
        Job(
            spec=self.spec.source,
            nemo=str(nemo or self.nemo),
            freeze=str(params.get("freeze", "none")),
            seed=seed,
            run_id=run_id,
            max_steps=max_steps,
            trial_id=trial_id,
            number=number,
            mode=mode,
            save_model=trial_id is not None and self.spec.training.keep_checkpoints != "none",
            storage=self.spec.storage_url,
            tracking_uri=self.spec.tracking_uri,
        ).write(trial_dir)
        log = (trial_dir / "trial.log").open("w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.slots[slot % len(self.slots)]}
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness.trial", str(trial_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent,
        )
        return proc, log

    def _heartbeat(self, job: Running) -> None:
        now = time.monotonic()
        if now - job.beat >= HEARTBEAT_SECONDS:
            TrialRecord.write(job.trial, heartbeat=time.time())
            job.beat = now

    def _finish(self, job: Running) -> Outcome:
        job.log.close()
        code = job.proc.returncode
        result = Result.read(job.trial_dir) or Result(state="fail", reason=_exit_reason(code))
        if result.state == "fail" and code < 0:
            result.reason = _exit_reason(code)  # killed mid-write: the signal is the truth
        self.view.trial_finished(time.monotonic() - job.started)
        outcome = self._record(job.trial, result, job.trial_dir / "trial.log", job.run_id, job.attempt)
        self._prune_checkpoints()
        self._print_outcome(outcome)
        return outcome

    def _record(self, trial: optuna.Trial, result: Result, log: Path, run_id: str, attempt: int) -> Outcome:
        """Tell Optuna and close the MLflow run with the matching status; re-queue failures."""
        number = trial.number
        if result.final:
            TrialRecord.write(trial, final={k: v for k, v in result.final.items() if k != "step"}, steps=result.steps)
        if result.state == "complete":
            self.study.tell(trial, result.objective)
            self.tracker.end_run(run_id, "FINISHED")
            return Outcome(number, TrialState.COMPLETE, result.objective, None, result)
        if result.state == "pruned":
            TrialRecord.write(trial, pruned_at=result.pruned_at)
            self.study.tell(trial, state=TrialState.PRUNED)
            self.tracker.end_run(run_id, "KILLED")
            return Outcome(number, TrialState.PRUNED, result.objective, f"pruned at step {result.pruned_at}", result)
        self._fail(trial, run_id, str(result.reason), next_attempt=self._next_attempt(attempt), log=log)
        return Outcome(number, TrialState.FAIL, None, result.reason, result)

    def _fail(
        self,
        trial: optuna.Trial | FrozenTrial,
        run_id: str | None,
        reason: str,
        *,
        next_attempt: int | None,
        log: Path | None,
        status: str = "FAILED",
    ) -> None:
        """FAIL in Optuna with a reason, FAILED/KILLED in MLflow, and a retry with the same params."""
        handle = trial if isinstance(trial, optuna.Trial) else optuna.Trial(self.study, trial._trial_id)
        TrialRecord.write(handle, fail_reason=reason, requeued=next_attempt is not None)
        if run_id is not None:
            self.tracker.set_tags(run_id, {"harness.fail_reason": reason[:250]})
            if log is not None:
                self.tracker.log_artifact(run_id, _write_tail(log), "logs")
            self.tracker.end_run(run_id, status)
        self.study.tell(handle, state=TrialState.FAIL)
        if next_attempt is not None:
            retry = TrialRecord.attrs(retry_of=trial.number, attempt=next_attempt)
            self.study.enqueue_trial(trial.params, user_attrs=retry)

    def _next_attempt(self, attempt: int) -> int | None:
        """A failed trial is retried with the same params up to `budget.max_retries` times."""
        return attempt + 1 if attempt < self.spec.budget.max_retries else None

    def _abandon(self, job: Running, reason: str) -> None:
        """A stop (Ctrl-C, SIGTERM): end the trial process; nothing stays RUNNING, the run is KILLED,
        the trial re-queued with the same params."""
        _stop_process(job.proc)
        job.log.close()
        self._fail(job.trial, job.run_id, reason, next_attempt=job.attempt, log=None, status="KILLED")

    def reconcile(self) -> list[int]:
        """Fail and re-queue RUNNING trials whose supervisor is gone (dead pid here, stale heartbeat elsewhere)."""
        host, dead = socket.gethostname(), []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            record = TrialRecord.of(t)
            here = record.host == host
            # A trial just asked by another worker has no owner attrs yet: its start time is its heartbeat.
            beat = record.heartbeat or t.datetime_start.timestamp()
            gone = not _alive(record.pid) if here else time.time() - beat > STALE_SECONDS
            if not gone:
                continue
            if here and _alive(record.trial_pid):
                os.kill(record.trial_pid, signal.SIGKILL)  # an orphan still training
            reason = SUPERVISOR_DIED
            attempt = self._next_attempt(record.attempt)
            self._fail(t, record.mlflow_run_id, reason, next_attempt=attempt, log=None)
            self.view.log(f"[yellow]{run_name(t.number)} was left RUNNING by a dead supervisor: FAIL, re-queued[/]")
            dead.append(t.number)
        return dead

    # -- output -----------------------------------------------------------------------------

    def _print_outcome(self, outcome: Outcome) -> None:
        name = run_name(outcome.number)
        if outcome.state == TrialState.COMPLETE:
            metrics = {k: v for k, v in outcome.result.final.items() if k != "step"}
            self.view.log(f"  {name} [green]COMPLETE[/] objective={_fmt_value(outcome.value)} {_fmt_metrics(metrics)}")
        elif outcome.state == TrialState.PRUNED:
            self.view.log(f"  {name} [yellow]PRUNED[/] ({outcome.reason})")
        else:
            self.view.log(f"  {name} [red]FAIL[/] {outcome.reason}")
        best = self.best_trial()
        best_text = f", best so far {run_name(best.number)} = {primary_value(best):.4f}" if best else ""
        self.view.log(f"  [dim]{self.budget_used()}/{self.spec.budget.trials} trials used{best_text}[/]")

    def _refresh(self, running: dict[int, Running]) -> None:
        if not self.view.live or time.monotonic() - self._view_refreshed < VIEW_SECONDS:
            return
        self._view_refreshed = time.monotonic()
        states = [t.state for t in self.study.get_trials(deepcopy=False)]
        counts = {
            "done": self.budget_used() - len(running),
            "running": len(running),
            "pruned": states.count(TrialState.PRUNED),
            "failed": states.count(TrialState.FAIL),
        }
        best = self.best_trial()
        best_text = f"{run_name(best.number)} = {primary_value(best):.4f}" if best else "-"
        jobs = [(run_name(j.trial.number), j.trial_dir) for j in running.values()]
        self.view.refresh(counts, best_text, jobs, len(self.slots))

    def best_trial(self) -> FrozenTrial | None:
        return best_trial(self.study)

    def _summarise(self) -> None:
        """Best-trial summary metrics on the parent run (search_runs shows last values, not best)."""
        best = self.best_trial()
        if best is None:
            return
        self.tracker.log_metrics(
            self.parent_run, {"best_objective": primary_value(best), "best_trial_number": best.number}
        )
        self.tracker.set_tags(self.parent_run, {"harness.best_trial": run_name(best.number)})


def _stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it has not exited within the grace period."""
    proc.terminate()
    try:
        proc.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _die_with_parent() -> None:
    """Linux: the trial process gets SIGKILL when its supervisor dies, so no orphan keeps a GPU."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _worker_alive(worker: str) -> bool:
    """Workers are `host:pid`; one on another host is assumed alive (no way to look)."""
    host, _, pid = worker.rpartition(":")
    return host != socket.gethostname() or (pid.isdigit() and _alive(int(pid)))


def _exit_reason(code: int) -> str:
    """Why a trial process died without writing its result (kill -9, segfault, ...)."""
    if code == EXIT_OOM:
        return "oom"
    if code < 0:
        return "killed" if -code == signal.SIGKILL else f"killed by {signal.Signals(-code).name}"
    return f"error: exit code {code}"


def _write_tail(log: Path) -> Path:
    tail = log.with_name("trial-log-tail.txt")
    lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:] if log.exists() else []
    tail.write_text("\n".join(lines) + "\n")
    return tail


def _fmt_params(params: dict) -> str:
    return " ".join(f"{k}={format_param(v)}" for k, v in params.items())


def _fmt_value(value: float | list[float] | None) -> str:
    if isinstance(value, list):
        return "(" + ", ".join(f"{v:.4f}" for v in value) + ")"
    return "-" if value is None else f"{value:.4f}"


def _fmt_metrics(metrics: dict) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items())


def reproduce_trial(spec: SweepSpec, number: int | None, console: Console) -> tuple[dict, dict]:
    """`harness reproduce`: re-run a trial (default: the best) and print both metric sets side by side."""
    from rich.table import Table

    supervisor = Supervisor(spec, console=console, slots=default_slots(1))
    trial, again = supervisor.reproduce(number)
    original = TrialRecord.of(trial).final
    table = Table(title=f"{run_name(trial.number)}: recorded vs reproduced")
    for column in ("metric", "recorded", "reproduced", "difference"):
        table.add_column(column)
    for key in sorted(set(original) | set(again)):
        a, b = original.get(key), again.get(key)
        diff = f"{b - a:+.4f}" if a is not None and b is not None else ""
        table.add_row(key, "" if a is None else f"{a:.4f}", "" if b is None else f"{b:.4f}", diff)
    console.print(table)
    return original, again
