"""The supervisor: the loop that asks Optuna, starts trial processes on free slots and records each outcome.

Data flow: spec -> stores check -> model source -> preflight -> study + parent run -> baseline ->
trials -> seed confirmation (`budget.confirm`) -> test set -> summary. The supervisor never imports NeMo,
nor torch (but for `sampler.type: gp`); it moves configs, processes and records. What it delegates:
launching a process (`_process`), recording an outcome (`_outcomes`), recovering dead trials (`_recovery`),
the baseline / test-set / reproduction runs (`_evaluations`), checkpoint retention (`_checkpoints`),
proposals that repeat a finished trial (`_repeats`) and the confirmation phase (`_confirming`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial
from rich.console import Console

from harness.canary import CheckpointInfo, inspect_checkpoint
from harness.confirmation import is_confirmation
from harness.devices import default_slots
from harness.disk_space import disk_full
from harness.errors import HarnessError, StoreError, TrialsFailedError
from harness.model_source import resolve_model
from harness.names import run_name
from harness.preflight import preflight
from harness.progress import SweepView
from harness.registry import register_best
from harness.spec import DataSpec, SweepSpec
from harness.start_from import load_space
from harness.stopping import TERMINATED, Stopped, reason_of, shielded, stop_requests
from harness.stores import redact
from harness.study import best_trial, training_seed
from harness.sweep._checkpoints import retain_checkpoints
from harness.sweep._confirming import await_trials, queue, queued_runs, record_decision
from harness.sweep._console import (
    note_reset_keys,
    print_outcome,
    print_validations,
    refresh_view,
    started_text,
    summarise_on_parent,
    sweep_params,
)
from harness.sweep._disk_full import record_full_disk
from harness.sweep._evaluations import Evaluations, Reproduction
from harness.sweep._outcomes import Outcome, OutcomeWriter
from harness.sweep._process import Launcher, TrialProcess, stop_process, trial_result
from harness.sweep._recovery import HEARTBEAT_SECONDS, reconcile
from harness.sweep._repeats import answer_repeat
from harness.sweep_stores import check_sweep_stores, open_sweep_stores
from harness.tracking import TRIAL_ROLE, Tracker
from harness.trial_dir import TrialDir
from harness.trial_manifests import write_trial_manifests
from harness.trial_record import OOM, TrialRecord

POLL_SECONDS = 0.25  # how soon a finished trial is noticed (its slot idles until then)
VIEW_SECONDS = 1.0  # the live view queries the study at most this often


class Supervisor:
    """Runs one sweep's trials on this machine until the budget is met.

    Constructing one does no I/O. `open()` checks the stores, the model and the data (preflight)
    and opens the study and its parent run; `run()` opens, then evaluates, trains and records.
    `on_outcome` is called after each trial is recorded (the memory benchmark samples there)."""

    # What `open()` sets: slots, search space, the checked model, the manifests trials read and the records.
    slots: list[dict[str, str]]
    space: dict[str, BaseDistribution]
    nemo: Path
    info: CheckpointInfo
    data: DataSpec
    study: optuna.Study
    tracker: Tracker
    parent_run: str
    view: SweepView
    launcher: Launcher
    recorder: OutcomeWriter
    evaluations: Evaluations

    def __init__(
        self,
        spec: SweepSpec,
        *,
        console: Console | None = None,
        worker: str | None = None,
        slots: list[dict[str, str]] | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.spec = spec
        self.console = console or Console()
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        self._slots_given = slots
        self.on_outcome = on_outcome
        self._opened = False
        self._view_refreshed = 0.0
        self._running: dict[int, TrialProcess] = {}  # slot -> trial process in flight
        self._parent_open = False  # the parent run is RUNNING because of this supervisor

    def open(self) -> Supervisor:
        """Check everything a sweep needs, cheapest first, then open its records (once)."""
        if self._opened:
            return self
        spec = self.spec
        self.slots = self._slots_given or default_slots(None, devices=spec.training.devices)
        self.space = load_space(spec)  # the search space, `start_from` checked against it
        # A bad or mismatched store fails in seconds, before the model is fetched and the data checked.
        check_sweep_stores(spec, self.space)
        self.nemo = resolve_model(spec.model)
        self.info = inspect_checkpoint(self.nemo)
        preflight(spec, self.info)
        self.data = write_trial_manifests(spec)  # copies with line numbers (and behaviour tokens)
        # Both stores exist before any trial process touches them; the study and its parent run are linked.
        stores = open_sweep_stores(
            spec,
            self.space,
            params=sweep_params(spec, self.info, self.nemo),
            tags={"optuna.study_name": spec.name, "optuna.storage": redact(spec.storage_url)},
        )
        self.study, self.tracker, self.parent_run = stores.study, stores.tracker, stores.parent_run
        self.view = SweepView(self.console, name=spec.name, budget=spec.budget.trials)
        self.launcher = Launcher(spec, self.info, self.nemo, self.data, self.tracker, self.slots)
        self.recorder = OutcomeWriter(spec, self.study, self.tracker)
        self.evaluations = Evaluations(
            spec, self.study, self.tracker, self.parent_run, self.launcher, self.worker, self.view.log
        )
        self._opened = True
        return self

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> list[Outcome]:
        """Reconcile dead trials, evaluate the baseline once, then fill the slots until the budget is met.

        Ctrl-C or SIGTERM at any point (baseline, trials, test set) stops the processes in flight
        and records them (`_record_stop`); the `Stopped` raised says what was recorded."""
        self.open()
        self._parent_open = True
        with self._stoppable():
            self.spec.trials_dir.mkdir(parents=True, exist_ok=True)
            self.tracker.client.update_run(self.parent_run, status="RUNNING")
            note_reset_keys(self.view, self.info)
            reconcile(self.recorder, self.view.log)
            self.evaluations.baseline()
            outcomes = self._fill_slots()
            outcomes += self._confirm()
            self.evaluations.test_best()
            self.evaluations.log_intervals()
            register_best(self.spec, self.view.log)  # issue 21: the chosen model into the registry (`registry.name`)
            summarise_on_parent(self.tracker, self.parent_run, self.best_trial())
            self.tracker.end_run(self.parent_run, "FINISHED")
        return outcomes

    def _fill_slots(self, *, confirming: bool = False) -> list[Outcome]:
        """Start trials while the budget, the clock and the failures allow; record each as it ends.
        `confirming`: start queued confirmation runs instead, while any are queued (their own budget)."""
        deadline = None
        if self.spec.budget.timeout_minutes and not confirming:
            deadline = time.monotonic() + 60 * self.spec.budget.timeout_minutes
        outcomes: list[Outcome] = []
        hopeless: list[FrozenTrial] = []
        budget = self.spec.budget.trials

        def done() -> bool:
            return queued_runs(self.study) == 0 if confirming else self.budget_used() >= budget

        with self.view:
            while True:
                out_of_time = deadline is not None and time.monotonic() > deadline
                for slot in range(len(self.slots)):  # a repeat answered at once leaves its slot free: ask again
                    while not (slot in self._running or out_of_time or hopeless or done()):
                        started = self._start(slot)
                        if isinstance(started, Outcome):
                            outcomes.append(started)
                        else:
                            self._running[slot] = started
                if not self._running:
                    break
                time.sleep(POLL_SECONDS)
                for slot, running in list(self._running.items()):
                    if running.proc.poll() is None:
                        self._heartbeat(running)
                        continue
                    del self._running[slot]
                    outcomes.append(self._finish(running))
                    hopeless = hopeless or self.recorder.repeated_failure()
                self._refresh()
        if deadline is not None and time.monotonic() > deadline:
            self.view.log("[yellow]Wall-clock budget reached; stopped starting trials.[/]")
        if hopeless:
            self._give_up(hopeless)
        return outcomes

    def _start(self, slot: int) -> TrialProcess | Outcome:
        """Ask Optuna for a trial, create its MLflow run and start its process; a repeat is answered instead."""
        trial = self.study.ask(self.space)
        confirm = is_confirmation(trial)  # same params as a finished trial on purpose: never a repeat
        repeat = None if confirm else answer_repeat(self.study, trial, self.worker)
        if repeat is not None:
            return self._announce(repeat)
        number, params = trial.number, dict(trial.params)
        seed = training_seed(self.spec.training.seed, number)
        TrialRecord.write(
            trial, seed=seed, host=socket.gethostname(), pid=os.getpid(), worker=self.worker, heartbeat=time.time()
        )
        tags = {"optuna.study_name": self.spec.name, "optuna.trial_number": str(number)}
        record = TrialRecord.of(trial)
        if record.retry_of is not None:
            tags["optuna.retry_of"] = str(record.retry_of)
        if record.confirms is not None:
            tags["harness.confirms"] = run_name(record.confirms)
        run_id = self.tracker.child_run(
            self.parent_run,
            name=run_name(number),
            role=TRIAL_ROLE,
            params={**params, "trial_number": number, "seed": seed},
            tags=tags,
        )
        TrialRecord.write(trial, mlflow_run_id=run_id)
        trial_dir = TrialDir.of(self.spec, number)
        self.view.log(started_text(number, params, record))
        proc, log = self.launcher.start(
            trial_dir,
            params,
            run_id=run_id,
            seed=seed,
            max_steps=self.spec.budget.max_steps,
            slot=slot,
            trial_id=trial._trial_id,
            number=number,
            confirm=confirm,
        )
        TrialRecord.write(trial, trial_pid=proc.pid)
        return TrialProcess(trial, proc, trial_dir, run_id, record.attempt, slot, log)

    def _confirm(self) -> list[Outcome]:
        """Seed confirmation (`budget.confirm`) once the search has ended everywhere; then the decision."""
        if self.spec.budget.confirm is None:
            return []
        log = self.view.log
        await_trials(self.study, confirmations=False, log=log)
        queue(self.study, self.spec, log)
        outcomes = self._fill_slots(confirming=True)
        await_trials(self.study, confirmations=True, log=log)
        record_decision(self.study, self.spec, self.tracker, self.parent_run, log)
        retain_checkpoints(self.spec, self.study)  # decided: only the model handed over stays
        return outcomes

    def _heartbeat(self, running: TrialProcess) -> None:
        now = time.monotonic()
        if now - running.beat >= HEARTBEAT_SECONDS:
            TrialRecord.write(running.trial, heartbeat=time.time())
            running.beat = now

    def _finish(self, running: TrialProcess) -> Outcome:
        """Read how the process ended, record it, apply checkpoint retention and say so."""
        running.log.close()
        result = trial_result(running.trial_dir, running.proc.returncode, self.spec.training.devices)
        print_validations(self.view, [running])  # a last validation written since the latest refresh
        self.view.trial_finished(time.monotonic() - running.started)
        outcome = self.recorder.record(running.trial, result, running.trial_dir, running.run_id, running.attempt)
        retain_checkpoints(self.spec, self.study)
        return self._announce(outcome)

    def _announce(self, outcome: Outcome) -> Outcome:
        """Print a recorded outcome with the budget used and the best so far; call the `on_outcome` hook."""
        print_outcome(
            self.view, outcome, best=self.best_trial(), used=self.budget_used(), budget=self.spec.budget.trials
        )
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        return outcome

    def _give_up(self, failed: list[FrozenTrial]) -> None:
        """End the sweep's parent run FAILED and raise the one error every trial hit."""
        last = failed[-1]
        reason = str(TrialRecord.of(last).fail_reason)
        hint = (
            "lower `batch_duration` in the search space or freeze more of the model"
            if reason == OOM
            else "fix what the log shows"
        )
        self.tracker.set_tags(self.parent_run, {"harness.fail_reason": reason[:250]})
        self.tracker.end_run(self.parent_run, "FAILED")
        self._parent_open = False
        log = TrialDir.of(self.spec, last.number).log
        raise TrialsFailedError(
            f"Stopped early: the first {len(failed)} trials of sweep {self.spec.name} all failed with "
            f"the same error ({reason}); {hint} ({log}), then run the same command to resume."
        )

    # -- stops ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _stoppable(self) -> Iterator[None]:
        """Ctrl-C and SIGTERM inside: everything in flight is stopped and recorded before `Stopped`."""
        with stop_requests():
            try:
                yield
            except KeyboardInterrupt as stop:
                with shielded():
                    raise self._record_stop(reason_of(stop)) from None
            except Exception as exc:  # a disk that fills: one sentence and nothing half-recorded (`_disk_full`)
                if isinstance(exc, HarnessError) or not disk_full(exc):
                    raise
                with shielded():
                    raise self._record_full_disk(exc) from None

    def _record_stop(self, reason: str) -> Stopped:
        """Stop the trial processes (FAIL, re-queued) and any evaluation in flight; end their runs KILLED."""
        stopped = []
        for running in list(self._running.values()):
            self.recorder.abandon(running, reason)
            stopped.append(f"{run_name(running.trial.number)} (FAIL: {reason}, re-queued)")
        self._running.clear()
        if self.evaluations.in_flight is not None:
            proc, run_id, what = self.evaluations.in_flight
            stop_process(proc)
            self.tracker.end_run(run_id, "KILLED")
            stopped.append(f"the {what} (its run KILLED)")
            self.evaluations.in_flight = None
        if self._parent_open:
            self.tracker.end_run(self.parent_run, "KILLED")
            self._parent_open = False
            stopped.append("the sweep's parent run KILLED")
        how = "Terminated (SIGTERM)" if reason == TERMINATED else "Interrupted"
        done = "; ".join(stopped) if stopped else "nothing was running"
        return Stopped(reason, f"{how}: recorded {done}. Run the same command to resume.")

    def _record_full_disk(self, exc: Exception) -> StoreError:
        """Stop what is in flight and hand the records to `_disk_full`, which writes nothing to the study."""
        running, self._running = list(self._running.values()), {}
        evaluation, self.evaluations.in_flight = self.evaluations.in_flight, None
        parent, self._parent_open = (self.parent_run if self._parent_open else None), False
        return record_full_disk(
            exc,
            spec=self.spec,
            study=self.study,
            tracker=self.tracker,
            worker=self.worker,
            running=running,
            evaluation=evaluation,
            parent_run=parent,
        )

    # -- what the CLI and tests call --------------------------------------------------------

    def reproduce(self, number: int | None) -> Reproduction:
        self.open()
        with self._stoppable():
            return self.evaluations.reproduce(number)

    def budget_used(self) -> int:
        return self.recorder.budget_used()

    def best_trial(self) -> FrozenTrial | None:
        return best_trial(self.study)

    # -- output -----------------------------------------------------------------------------

    def _refresh(self) -> None:
        """At most every VIEW_SECONDS: the live view (it queries the study), or lines without a terminal."""
        if time.monotonic() - self._view_refreshed < VIEW_SECONDS:
            return
        self._view_refreshed = time.monotonic()
        if not self.view.live:
            print_validations(self.view, self._running.values())
            return
        refresh_view(self.view, self.study, self.best_trial(), self.budget_used(), self._running, len(self.slots))
