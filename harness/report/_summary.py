"""What the sweep found: the study read back, its trials in order, and the verdict against the baseline.

Everything else in the report (console, page, best.yaml) is a view of a `SweepSummary`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.definition import check_study
from harness.directions import Direction
from harness.names import BASELINE_ATTR, run_name
from harness.number_text import number_text
from harness.objective import objective_value
from harness.search_space import format_param, load_search_space
from harness.spec import SweepSpec
from harness.study import best_trial, primary_value, require_study
from harness.trial_record import TrialRecord


@dataclass
class SweepSummary:
    """What a finished (or running) sweep has found so far."""

    study: optuna.Study
    trials: list[FrozenTrial]
    best: FrozenTrial | None
    baseline: dict | None

    @property
    def direction(self) -> Direction:
        """The study's (first) direction: the study, not the spec, decides what "best" meant."""
        return Direction.of(self.study.directions[0])

    @property
    def multi_objective(self) -> bool:
        return len(self.study.directions) > 1

    @property
    def best_final(self) -> dict[str, float]:
        """The best trial's final figures, compared with `baseline`'s; empty without a best trial."""
        return TrialRecord.of(self.best).final if self.best else {}


def summarize(spec: SweepSpec) -> SweepSummary:
    """Load the sweep's study read-only. A sweep that never ran is an error that creates nothing; a
    spec that no longer defines the study (objective, search space) is one too, not a mislabelled report."""
    study = require_study(spec)
    space = load_search_space(spec.search_space) if Path(spec.search_space).is_file() else None
    check_study(spec, study, space, adopt=False)
    trials = study.get_trials(deepcopy=False)
    return SweepSummary(study, trials, best_trial(study), study.user_attrs.get(BASELINE_ATTR))


def ordered_trials(trials: list[FrozenTrial], study: optuna.Study) -> list[FrozenTrial]:
    """Best objective first, then trials without a value in number order."""
    sign = Direction.of(study.directions[0]).sign

    def key(t: FrozenTrial) -> tuple:
        value = shown_value(t)
        return (value is None, sign * value if value is not None else 0, t.number)

    return sorted(trials, key=key)


def shown_value(trial: FrozenTrial) -> float | None:
    """The objective the report shows: none for a trial that ran out of memory, although Optuna
    keeps the last validation of one that ran out mid-training as a pruned trial's value."""
    return None if _oom(trial) else primary_value(trial)


def state_text(trial: FrozenTrial) -> str:
    """COMPLETE, PRUNED, FAIL, or OOM: Optuna holds an out-of-memory trial PRUNED (infeasible)."""
    return "OOM" if _oom(trial) else trial.state.name


def trial_note(trial: FrozenTrial) -> str:
    """Why a trial did not complete (failure reason, or the step it was pruned at), whose retry or repeat it
    is, and which `start_from` entry gave its params."""
    notes, record = [], TrialRecord.of(trial)
    if record.fail_reason:
        notes.append(record.fail_reason)
    elif record.pruned_at is not None:
        notes.append(f"pruned at step {record.pruned_at}")
    if record.retry_of is not None:
        notes.append(f"retry of {run_name(record.retry_of)}")
    if record.repeat_of is not None:
        notes.append(f"repeat of {run_name(record.repeat_of)}: its result, nothing trained")
    if record.start_from is not None:
        notes.append(f"start_from[{record.start_from}]")
    return "; ".join(notes)


def trial_steps(trial: FrozenTrial) -> int:
    """Optimizer steps a trial trained: recorded `steps`, else the step it was pruned at."""
    record = TrialRecord.of(trial)
    return record.steps or record.pruned_at or 0


@dataclass
class PruningSavings:
    """Compute pruning saved: steps trained against steps the same trials would have run unpruned."""

    trained: int
    unpruned: int
    trials: int

    @property
    def percent(self) -> float:
        return 100.0 * (1 - self.trained / self.unpruned) if self.unpruned else 0.0


def pruning_savings(trials: list[FrozenTrial], max_steps: int) -> PruningSavings:
    """Over complete and pruned trials; failed ones are left out (a crash or an OOM is not a saving), and
    repeats too (answered from an earlier trial's result, they would have trained nothing either way)."""
    counted = [
        t
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and not _oom(t) and TrialRecord.of(t).repeat_of is None
    ]
    return PruningSavings(sum(trial_steps(t) for t in counted), len(counted) * max_steps, len(counted))


MEMORY_HEADERS = ["freeze", "largest batch_duration that fit", "smallest that ran out of memory"]


def memory_rows(trials: list[FrozenTrial]) -> list[list[str]]:
    """Per freeze mode, the largest `batch_duration` that fit (a complete or pruned trial) and the
    smallest that ran out of memory: the bounds for the next search space. Empty when the search
    space does not vary `batch_duration`. A failure for another reason says nothing about memory."""
    fit: dict[str, list[float]] = {}
    oom: dict[str, list[float]] = {}
    for t in trials:
        if "batch_duration" not in t.params:
            continue
        freeze = str(t.params.get("freeze", "none"))  # the trial's default (harness.sweep._process)
        if _oom(t):
            oom.setdefault(freeze, []).append(t.params["batch_duration"])
        elif t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            fit.setdefault(freeze, []).append(t.params["batch_duration"])
    return [
        [
            mode,
            format_param(max(fit[mode])) if mode in fit else "-",
            format_param(min(oom[mode])) if mode in oom else "none",
        ]
        for mode in sorted(fit.keys() | oom.keys())
    ]


def _oom(trial: FrozenTrial) -> bool:
    return TrialRecord.of(trial).out_of_memory


def baseline_verdict(spec: SweepSpec, summary: SweepSummary) -> str:
    """A warning when fine-tuning did not beat the zero-shot baseline: then the pretrained model is the answer."""
    best, baseline = summary.best, summary.baseline
    if best is None or not baseline:
        return ""
    try:
        before = objective_value(baseline, spec.objective)
    except (ValueError, KeyError):
        return ""
    after = primary_value(best)
    if after is None or summary.direction.better(after, before):
        return ""
    return (
        f"Warning: the best trial does not beat the zero-shot baseline (objective {number_text(after)} against "
        f"{number_text(before)}): keep the pretrained model, or raise `budget.max_steps` / widen the search space."
    )
