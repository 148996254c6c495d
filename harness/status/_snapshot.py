"""One reading of a sweep's study: what its trials are doing, the best so far, the budget left and when it ends.

Everything comes from one `get_trials` call (Optuna's cached storage then reads only the trials that changed
since the last refresh), the study's attributes and the best-trial helpers of `harness.study`.
"""

from __future__ import annotations

import datetime
from collections import Counter
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.confirmation import budget_used, is_confirmation
from harness.names import DECISION_ATTR, LAUNCH_JOBS_ATTR
from harness.objective import objective_names
from harness.spec import SweepSpec
from harness.status._jobs import LaunchJob, TaskState, launch_jobs, slurm_states
from harness.status._pace import Eta, estimate_eta
from harness.study import best_trial, feasible, no_best_reason
from harness.trial_record import TrialRecord

# What each trial counts as, in the order the view lists them.
COMPLETE, PRUNED, RUNNING, FAILED, OOM, QUEUED = "complete", "pruned", "running", "failed", "out of memory", "queued"
KINDS = (COMPLETE, PRUNED, RUNNING, FAILED, OOM, QUEUED)


@dataclass(frozen=True)
class RunningTrial:
    """A trial in flight: its last report to Optuna (step and objective figure), who runs it, for how long."""

    number: int
    step: int | None
    figure: float | None
    worker: str | None
    seconds: float
    confirmation: bool


@dataclass(frozen=True)
class SweepStatus:
    """What `harness status` shows, read at `taken`."""

    name: str
    figure_name: str  # the objective's first figure, as the running trials report it
    reported: bool  # whether trials report their validations to Optuna (a Pareto study's do not: no pruning)
    max_steps: int
    search: Counter[str]  # trials of the search by kind (`KINDS`)
    confirmation: Counter[str]  # seed-confirmation runs by kind; empty without any
    infeasible: int  # complete search trials that break a constraint (forgetting)
    requeued: int  # failures re-queued with the same params (they do not use the budget)
    running: list[RunningTrial]
    best: FrozenTrial | None
    no_best: str  # why there is no best trial, when there is none
    budget: int
    used: int
    confirm_runs: int  # confirmation runs the budget plans (`confirm.top` x `confirm.seeds`), 0 without
    decided: bool  # seed confirmation has recorded its decision
    eta: Eta
    jobs: list[LaunchJob]
    job_states: dict[str, list[TaskState]] | str  # Slurm's word on each job's tasks, or why it cannot be read
    taken: datetime.datetime


def kind(trial: FrozenTrial) -> str:
    """What a trial counts as; out of memory is PRUNED in Optuna (FAIL from older harnesses), whatever its state."""
    if trial.state in (TrialState.PRUNED, TrialState.FAIL) and TrialRecord.of(trial).out_of_memory:
        return OOM
    return {
        TrialState.COMPLETE: COMPLETE,
        TrialState.PRUNED: PRUNED,
        TrialState.RUNNING: RUNNING,
        TrialState.FAIL: FAILED,
        TrialState.WAITING: QUEUED,
    }[trial.state]


def read_status(spec: SweepSpec, study: optuna.Study, *, now: datetime.datetime | None = None) -> SweepStatus:
    """The sweep as its study holds it now; reads only (no lock, no write)."""
    now = now or datetime.datetime.now()
    trials = study.get_trials(deepcopy=False)
    attrs = study.user_attrs
    search: list[FrozenTrial] = []
    confirmations: list[FrozenTrial] = []
    for trial in trials:
        (confirmations if is_confirmation(trial) else search).append(trial)
    best = best_trial(study)
    confirm = spec.budget.confirm
    planned = confirm.top * confirm.seeds if confirm else 0
    decided = DECISION_ATTR in attrs
    used = budget_used(trials)
    jobs = launch_jobs(attrs.get(LAUNCH_JOBS_ATTR))
    return SweepStatus(
        name=spec.name,
        figure_name=objective_names(spec.objective)[0],
        reported=not spec.multi_objective,
        max_steps=spec.budget.max_steps,
        search=Counter(kind(t) for t in search),
        confirmation=Counter(kind(t) for t in confirmations),
        infeasible=sum(t.state == TrialState.COMPLETE and not feasible(t) for t in search),
        requeued=sum(t.state == TrialState.FAIL and TrialRecord.of(t).requeued for t in trials),
        running=[_running(t, now, confirmation=is_confirmation(t)) for t in trials if t.state == TrialState.RUNNING],
        best=best,
        no_best="" if best is not None else no_best_reason(study),
        budget=spec.budget.trials,
        used=used,
        confirm_runs=planned,
        decided=decided,
        eta=estimate_eta(
            search,
            confirmations,
            search_left=max(0, spec.budget.trials - used),
            confirm_runs=0 if decided else planned,
            max_steps=spec.budget.max_steps,
            now=now,
        ),
        jobs=jobs,
        job_states=slurm_states(jobs),
        taken=now,
    )


def _running(trial: FrozenTrial, now: datetime.datetime, *, confirmation: bool) -> RunningTrial:
    step = max(trial.intermediate_values, default=None)
    started = trial.datetime_start or now
    return RunningTrial(
        number=trial.number,
        step=step,
        figure=trial.intermediate_values[step] if step is not None else None,
        worker=TrialRecord.of(trial).worker,
        seconds=max(0.0, (now - started).total_seconds()),
        confirmation=confirmation,
    )
