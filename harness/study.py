"""Optuna: storage, study, sampler seeds, pruner and the pruning report at `global_step`.

All Optuna knowledge lives here. Trials run in their own processes; a trial process reopens
the study from the same storage and reports to its own trial id, so the pruner sees every
validation, not one per epoch like optuna-integration's Lightning callback.
"""

from __future__ import annotations

import hashlib
import math
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from sqlalchemy.exc import SQLAlchemyError

from harness.spec import SweepSpec

optuna.logging.set_verbosity(optuna.logging.WARNING)


def open_storage(url: str, *, attempts: int = 5) -> RDBStorage:
    """An RDB storage; SQLite waits for locks instead of failing when several processes write.

    Workers on several hosts may meet a fresh database together; creating its schema races, so
    a failed creation is retried once the other worker has finished it.
    """
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"connect_args": {"timeout": 120}}
    else:
        kwargs = {"pool_pre_ping": True}
    for attempt in range(attempts):
        try:
            return RDBStorage(url, engine_kwargs=kwargs)
        except SQLAlchemyError:
            if attempt == attempts - 1:
                raise
            time.sleep(1 + attempt + random.random())
    raise AssertionError("unreachable")


def trial_seed(study_seed: int, number: int) -> int:
    """The sampler seed of trial `number`: one fixed seed would re-propose the same params on resume."""
    digest = hashlib.sha256(f"{study_seed}:{number}".encode()).hexdigest()
    return int(digest[:8], 16)


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """A fresh sampler per trial, seeded from (study seed, trial number).

    The same sweep then proposes the same params on any machine and after any resume, while
    concurrent workers, whose trials always have distinct numbers, never draw alike. TPE keeps
    no state between trials beyond its random generator, so nothing else is lost.
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


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    """Optuna cannot prune multi-objective trials, so a `pareto` sweep never prunes."""
    if spec.pruner.type == "none" or spec.multi_objective:
        return optuna.pruners.NopPruner()
    pruner = LatestMedianPruner if spec.pruner.compare == "latest" else optuna.pruners.MedianPruner
    return pruner(n_startup_trials=spec.pruner.n_startup_trials, n_warmup_steps=spec.pruner.n_warmup_steps)


class LatestMedianPruner(optuna.pruners.MedianPruner):
    """Median pruning on the trial's latest value instead of its best so far.

    Optuna's median pruner compares a trial's best intermediate value, so a fine-tune whose WER
    was fair at its first validation and then climbs (a decoder starting to hallucinate) is never
    stopped. Here the value just reported at step s meets the median of the complete trials'
    values at s.
    """

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self._n_warmup_steps:
            return False
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete or len(complete) < self._n_startup_trials:
            return False
        latest = trial.intermediate_values[step]
        if math.isnan(latest):
            return True
        others = [t.intermediate_values[step] for t in complete if step in t.intermediate_values]
        others = [value for value in others if not math.isnan(value)]
        if not others:
            return False
        median = statistics.median(others)
        return latest < median if study.direction == optuna.study.StudyDirection.MAXIMIZE else latest > median


def make_sampler(spec: SweepSpec, seed: int) -> optuna.samplers.BaseSampler:
    if spec.sampler.type == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(4, spec.budget.trials))


def open_study(spec: SweepSpec) -> optuna.Study:
    """Create the sweep's study or load it (resume); each trial's sampler seed follows from its number."""
    storage = open_storage(spec.storage_url)
    try:
        study = optuna.create_study(
            study_name=spec.name,
            storage=storage,
            directions=spec.directions,
            load_if_exists=True,
            pruner=make_pruner(spec),
        )
    except SQLAlchemyError:  # another worker created it at the same instant
        study = optuna.load_study(study_name=spec.name, storage=storage, pruner=make_pruner(spec))
    study.sampler = TrialSeededSampler(lambda seed: make_sampler(spec, seed), spec.sampler.seed)
    return study


def primary_value(trial: optuna.trial.FrozenTrial) -> float | None:
    """The first objective's value; `FrozenTrial.value` raises on multi-objective studies."""
    return trial.values[0] if trial.values else None


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best complete trial; for a Pareto study, the front's trial with the best first objective."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    if len(study.directions) == 1:
        return study.best_trial
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else -1
    return min(study.best_trials, key=lambda t: (sign * t.values[0], t.number))


def trial_handle(study: optuna.Study, trial_id: int) -> optuna.Trial:
    """The running trial as seen from the trial process (report / should_prune)."""
    return optuna.trial.Trial(study, trial_id)
