"""Samplers: TPE, random or GP, seeded per trial; out of memory made visible to GP as a violated constraint.

An out-of-memory trial is told PRUNED with the constraint `out_of_memory` = 1 (`harness.study.tell_out_of_memory`),
the form TPE learns from. Optuna 5's GPSampler reads constraints from `Trial.set_constraint` without any
`constraints_func` (`samplers/_gp/sampler.py` `_get_constraint_vals_and_feasibility` reads
`trial.constraints`), but only from COMPLETE trials: `sample_relative` asks for `(COMPLETE, RUNNING)`, so a
PRUNED trial, constraint and all, never reaches it. `GPMemoryView` shows it those trials as complete.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Container
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.directions import Direction
from harness.spec import SweepSpec

MEMORY_CONSTRAINT = "out_of_memory"  # the Optuna constraint an OOM trial violates (1.0); > 0 is infeasible


def make_sampler(spec: SweepSpec, seed: int) -> optuna.samplers.BaseSampler:
    """TPE and GP model the objective after a few random start-up trials (at most the budget)."""
    startup = min(4, spec.budget.trials)
    if spec.sampler.type == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler.type == "gp":
        return GPMemoryView(optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def trial_seed(study_seed: int, number: int) -> int:
    """The sampler seed of trial `number`: one fixed seed would re-propose the same params on resume."""
    digest = hashlib.sha256(f"{study_seed}:{number}".encode()).hexdigest()
    return int(digest[:8], 16)


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """A fresh sampler per trial, seeded from (study seed, trial number).

    The same sweep then proposes the same params on any machine and after any resume, while
    concurrent workers, whose trials always have distinct numbers, never draw alike. TPE keeps
    no state between trials beyond its random generator, so nothing else is lost (GP loses its cached
    kernel fit, a warm start: it refits from the study's trials).
    """

    def __init__(self, build: Callable[[int], optuna.samplers.BaseSampler], seed: int) -> None:
        self._build = build
        self._seed = seed
        self._inner = build(seed)

    def before_trial(self, study, trial) -> None:
        self._inner = self._build(trial_seed(self._seed, trial.number))
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._inner.after_trial(study, trial, state, values)


class GPMemoryView(optuna.samplers.BaseSampler):
    """GPSampler modelling the study as `memory_view` rewrites it: out of memory as an infeasible complete trial."""

    def __init__(self, inner: optuna.samplers.BaseSampler) -> None:
        self._inner = inner

    def before_trial(self, study, trial) -> None:
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._inner.infer_relative_search_space(_StudyView(study), trial)

    def sample_relative(self, study, trial, search_space):
        return self._inner.sample_relative(_StudyView(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._inner.after_trial(study, trial, state, values)


def memory_view(trials: list[FrozenTrial], directions: list[optuna.study.StudyDirection]) -> list[FrozenTrial]:
    """`trials` with each out-of-memory one COMPLETE at the worst complete value and its constraint violated,
    and every complete one carrying every constraint some trial has (0 where it has none: GPSampler refuses
    trials with differing constraint counts, e.g. trials completed before a retention limit could judge
    them). The worst value keeps the objective's model pessimistic there too; the constraint's model learns
    where memory runs out. Unchanged while nothing completed or no trial has a constraint."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    out_of_memory = any(_out_of_memory(t) for t in trials)
    names = {name for t in complete for name in t.constraints} | ({MEMORY_CONSTRAINT} if out_of_memory else set())
    if not complete or not names:
        return trials
    worst = [Direction.of(direction).worst(t.values[i] for t in complete) for i, direction in enumerate(directions)]
    shown = []
    for trial in trials:
        if _out_of_memory(trial) or trial.state == TrialState.COMPLETE:
            trial = copy.deepcopy(trial)
            if trial.state != TrialState.COMPLETE:
                trial.state, trial.values = TrialState.COMPLETE, worst
            trial.system_attrs = {**{f"constraints:{name}": 0.0 for name in sorted(names)}, **trial.system_attrs}
        shown.append(trial)
    return shown


def _out_of_memory(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.PRUNED and trial.constraints.get(MEMORY_CONSTRAINT, 0.0) > 0


class _StudyView:
    """The study as GPSampler reads it (`_get_trials`, `get_trials`), rewritten by `memory_view`; everything
    else (directions, storage, ids) is the study's own."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None, use_cache: bool = False
    ) -> list[FrozenTrial]:
        trials = self._study._get_trials(deepcopy=deepcopy, states=None, use_cache=use_cache)
        shown = memory_view(trials, self._study.directions)
        return [t for t in shown if states is None or t.state in states]

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states)
