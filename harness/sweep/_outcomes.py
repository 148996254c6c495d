"""Recording how a trial ended: Optuna state, MLflow status and a retry, always together.

Outcomes map one to one: COMPLETE/FINISHED, PRUNED/KILLED, FAIL/FAILED (with a reason); a stop
(Ctrl-C, SIGTERM) is FAIL/KILLED. A failed trial is re-queued with the same params up to
`budget.max_retries` times.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.spec import SweepSpec
from harness.stopping import INTERRUPTED, TERMINATED
from harness.sweep._process import TrialProcess, stop_process, write_tail
from harness.tracking import Tracker
from harness.trial import Result
from harness.trial_record import TrialRecord

SUPERVISOR_DIED = "killed: its supervisor died"
SUPERVISOR_REASONS = (INTERRUPTED, TERMINATED, SUPERVISOR_DIED)  # fail reasons that are not the trial's own
SAME_FAILURES_TO_STOP = 3


@dataclass
class Outcome:
    """How one trial ended, as the supervisor recorded it."""

    number: int
    state: TrialState
    value: float | None
    reason: str | None
    result: Result | None


@dataclass
class Recorder:
    """Writes outcomes into the study and the trial's MLflow run."""

    spec: SweepSpec
    study: optuna.Study
    tracker: Tracker

    def record(self, trial: optuna.Trial, result: Result, log: Path, run_id: str, attempt: int) -> Outcome:
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
        self.fail(trial, run_id, str(result.reason), next_attempt=self.next_attempt(attempt), log=log)
        return Outcome(number, TrialState.FAIL, None, result.reason, result)

    def fail(
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
                self.tracker.log_artifact(run_id, write_tail(log), "logs")
            self.tracker.end_run(run_id, status)
        self.study.tell(handle, state=TrialState.FAIL)
        if next_attempt is not None:
            retry = TrialRecord.attrs(retry_of=trial.number, attempt=next_attempt)
            self.study.enqueue_trial(trial.params, user_attrs=retry)

    def next_attempt(self, attempt: int) -> int | None:
        """A failed trial is retried with the same params up to `budget.max_retries` times."""
        return attempt + 1 if attempt < self.spec.budget.max_retries else None

    def abandon(self, running: TrialProcess, reason: str) -> None:
        """A stop (Ctrl-C, SIGTERM): end the trial process; nothing stays RUNNING, the run is KILLED,
        the trial re-queued with the same params."""
        stop_process(running.proc)
        running.log.close()
        self.fail(running.trial, running.run_id, reason, next_attempt=running.attempt, log=None, status="KILLED")

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

    def repeated_failure(self) -> FrozenTrial | None:
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
