"""Recording how a trial ended: Optuna state, MLflow status and a retry, always together.

Outcomes map one to one: COMPLETE/FINISHED, PRUNED/KILLED, FAIL/FAILED (with a reason); a stop
(Ctrl-C, SIGTERM) is FAIL/KILLED. A failed trial is re-queued with the same params up to
`budget.max_retries` times. Out of memory is not a failure to retry (the same params run out
again) but an infeasible point: PRUNED with its memory constraint violated in Optuna, so the
sampler steers away (`harness.study.tell_out_of_memory`), FAILED with `oom` in MLflow, never re-queued.
A complete trial that forgot too much of its old domain (`objective.retention_max_wer_increase`) is
COMPLETE and infeasible: its retention constraint is set before it is told. A trial that judged merges with
the pretrained model (`harness.merging`) is judged on the merge it hands over, whose alpha it records.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from harness.confirmation import budget_used
from harness.names import BASELINE_ATTR
from harness.retention import forgets_text, wer_increase
from harness.spec import SweepSpec
from harness.stopping import INTERRUPTED, TERMINATED
from harness.study import set_retention_constraint, tell_out_of_memory
from harness.sweep._process import TrialProcess, stop_process, write_tail
from harness.tracking import Tracker
from harness.trial import Result
from harness.trial_dir import TrialDir
from harness.trial_record import OOM, TrialRecord

SUPERVISOR_DIED = "killed: its supervisor died"
SUPERVISOR_REASONS = (INTERRUPTED, TERMINATED, SUPERVISOR_DIED)  # fail reasons that are not the trial's own
SAME_FAILURES_TO_STOP = 3


@dataclass
class Outcome:
    """How one trial ended, as the supervisor recorded it."""

    number: int
    state: TrialState
    value: float | list[float] | None  # a list for multi-objective (pareto) sweeps
    reason: str | None  # why it failed or was pruned; for a complete trial, why it is infeasible or unjudged
    result: Result | None
    repeat_of: int | None = None  # answered from this earlier trial's result, nothing trained (sweep._repeats)

    @property
    def out_of_memory(self) -> bool:
        return self.reason == OOM


@dataclass
class OutcomeWriter:
    """Writes outcomes into the study and the trial's MLflow run."""

    spec: SweepSpec
    study: optuna.Study
    tracker: Tracker

    def record(self, trial: optuna.Trial, result: Result, trial_dir: TrialDir, run_id: str, attempt: int) -> Outcome:
        """Tell Optuna and close the MLflow run with the matching status; re-queue failures but not OOMs."""
        number = trial.number
        if result.final:
            TrialRecord.write(trial, final={k: v for k, v in result.final.items() if k != "step"}, steps=result.steps)
        if result.numerics:  # what `harness reproduce` re-creates (threads) or names (device, versions, ...)
            TrialRecord.write(trial, numerics=result.numerics)
        if result.merge_alpha is not None:  # judged after training, not sampled: a record, not an Optuna param
            TrialRecord.write(trial, merge_alpha=result.merge_alpha, merges=result.merges)
        if result.state == "complete":
            note = self.judge_retention(trial, result.final)
            self.study.tell(trial, result.objective)
            self.tracker.end_run(run_id, "FINISHED")
            return Outcome(number, TrialState.COMPLETE, result.objective, note, result)
        if result.state == "pruned":
            TrialRecord.write(trial, pruned_at=result.pruned_at)
            self.study.tell(trial, state=TrialState.PRUNED)
            self.tracker.end_run(run_id, "KILLED")
            return Outcome(number, TrialState.PRUNED, result.objective, f"pruned at step {result.pruned_at}", result)
        if result.reason == OOM:
            self._close_failed_run(trial, run_id, OOM, requeued=False, trial_dir=trial_dir, status="FAILED")
            tell_out_of_memory(self.study, trial)
            return Outcome(number, TrialState.PRUNED, None, OOM, result)
        self.fail(trial, run_id, str(result.reason), next_attempt=self.next_attempt(attempt), trial_dir=trial_dir)
        return Outcome(number, TrialState.FAIL, None, result.reason, result)

    def judge_retention(self, trial: optuna.Trial, final: dict) -> str | None:
        """With a retention limit, set the trial's constraint (increase over the baseline minus the limit)
        before it is told; returns the note for an infeasible trial, or for one that could not be judged."""
        limit = self.spec.objective.retention_max_wer_increase
        if limit is None:
            return None
        increase = wer_increase(final, self.study.user_attrs.get(BASELINE_ATTR))
        if increase is None:
            return "retention not judged: no baseline retention WER (the trial counts as feasible)"
        set_retention_constraint(trial, increase - limit)
        return forgets_text(increase, limit) if increase > limit else None

    def fail(
        self,
        trial: optuna.Trial | FrozenTrial,
        run_id: str | None,
        reason: str,
        *,
        next_attempt: int | None,
        trial_dir: TrialDir | None,
        status: str = "FAILED",
    ) -> None:
        """FAIL in Optuna with a reason, FAILED/KILLED in MLflow, and a retry with the same params."""
        handle = trial if isinstance(trial, optuna.Trial) else optuna.Trial(self.study, trial._trial_id)
        requeued = next_attempt is not None
        self._close_failed_run(handle, run_id, reason, requeued=requeued, trial_dir=trial_dir, status=status)
        self.study.tell(handle, state=TrialState.FAIL)
        if next_attempt is not None:
            confirms = TrialRecord.of(trial).confirms  # a confirmation run's retry confirms the same setting
            retry = TrialRecord.attrs(retry_of=trial.number, attempt=next_attempt, confirms=confirms)
            self.study.enqueue_trial(trial.params, user_attrs=retry)

    def _close_failed_run(
        self,
        trial: optuna.Trial,
        run_id: str | None,
        reason: str,
        *,
        requeued: bool,
        trial_dir: TrialDir | None,
        status: str,
    ) -> None:
        """The reason on the trial and on its MLflow run (with the log's tail), and the run ended."""
        TrialRecord.write(trial, fail_reason=reason, requeued=requeued)
        if run_id is None:
            return
        self.tracker.set_tags(run_id, {"harness.fail_reason": reason[:250]})
        if trial_dir is not None:
            self.tracker.log_artifact(run_id, write_tail(trial_dir), "logs")
        self.tracker.end_run(run_id, status)

    def next_attempt(self, attempt: int) -> int | None:
        """A failed trial is retried with the same params up to `budget.max_retries` times."""
        return attempt + 1 if attempt < self.spec.budget.max_retries else None

    def abandon(self, running: TrialProcess, reason: str) -> None:
        """A stop (Ctrl-C, SIGTERM): end the trial process; nothing stays RUNNING, the run is KILLED,
        the trial re-queued with the same params."""
        stop_process(running.proc)
        running.log.close()
        self.fail(running.trial, running.run_id, reason, next_attempt=running.attempt, trial_dir=None, status="KILLED")

    def budget_used(self) -> int:
        """Search trials that count against the budget: decided ones (out of memory too; a re-queued failure
        does not) and running ones (`confirmation.budget_used`)."""
        return budget_used(self.study.get_trials(deepcopy=False))

    def repeated_failure(self) -> list[FrozenTrial]:
        """The failed trials, once the sweep's first `SAME_FAILURES_TO_STOP` or more decided trials all
        failed with one reason: a setting every trial trips on (a bad path, a model that fits at no
        size) should not spend the whole budget. Empty otherwise. Stops recorded by a supervisor
        (Ctrl-C, SIGTERM) do not count.

        Out of memory counts as a failure here, but only while nothing has fit and once one of those
        trials ran at the search space's smallest `batch_duration`: OOMs at large sizes are a region
        the sampler learns to avoid, and a few random start-up proposals all landing there by chance
        must not end a sweep whose small sizes would run. Once any trial fits, nothing stops it."""
        decided = self.study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        )
        counted = [t for t in decided if TrialRecord.of(t).fail_reason not in SUPERVISOR_REASONS]
        if len(counted) < SAME_FAILURES_TO_STOP or not all(_failed(t) for t in counted):
            return []
        reasons = {TrialRecord.of(t).fail_reason for t in counted}
        if len(reasons) != 1 or (reasons == {OOM} and not any(_at_smallest_batch(t) for t in counted)):
            return []
        return sorted(counted, key=lambda t: t.number)


def _failed(trial: FrozenTrial) -> bool:
    """FAIL in Optuna, or out of memory (PRUNED and infeasible there)."""
    return trial.state == TrialState.FAIL or TrialRecord.of(trial).out_of_memory


def _at_smallest_batch(trial: FrozenTrial) -> bool:
    """Whether the trial ran at the smallest `batch_duration` its search space allows (or the space
    does not vary it): below that, the sampler has nothing smaller to try."""
    dist = trial.distributions.get("batch_duration")
    if dist is None:
        return True
    if isinstance(dist, CategoricalDistribution):
        low = min(float(choice) for choice in dist.choices if isinstance(choice, (int, float)))
    else:
        low = float(getattr(dist, "low", 0.0))
    return trial.params["batch_duration"] <= low
