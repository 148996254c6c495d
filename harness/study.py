"""Optuna: storage, study, sampler seeds, pruner, the pruning report at `global_step`, and out of
memory told as an infeasible trial.

All Optuna knowledge lives here. Trials run in their own processes; a trial process reopens
the study from the same storage and reports to its own trial id, so the pruner sees every
validation, not one per epoch like optuna-integration's Lightning callback.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections.abc import Callable

import optuna
from optuna.distributions import BaseDistribution
from optuna.exceptions import DuplicatedStudyError
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from sqlalchemy.exc import SQLAlchemyError

from harness.definition import check_study, record_new
from harness.errors import HarnessError
from harness.spec import SweepSpec
from harness.stores import (
    OPTUNA_STORE,
    STORAGE_SETTING,
    engine_kwargs,
    open_database,
    reported,
    sqlite_path,
    store_name,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def open_storage(url: str) -> RDBStorage:
    """An RDB storage; SQLite waits for locks instead of failing when several processes write.

    A fresh SQLite file is created by one process at a time; an unreachable server or a file that
    is not a database is a one-line error (see harness.stores).
    """
    return open_database(url, lambda: RDBStorage(url, engine_kwargs=engine_kwargs(url)))


def trial_seed(study_seed: int, number: int) -> int:
    """The sampler seed of trial `number`: one fixed seed would re-propose the same params on resume."""
    digest = hashlib.sha256(f"{study_seed}:{number}".encode()).hexdigest()
    return int(digest[:8], 16)


def training_seed(base: int, number: int) -> int:
    """The training seed of trial `number` (Lightning's seed_everything, data shuffling): recorded with the
    trial, so `harness reproduce` and the benchmarks' bare runs train exactly what the trial trained."""
    return base * 100_003 + number


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


MEMORY_CONSTRAINT = "out_of_memory"  # the Optuna constraint an OOM trial violates (1.0); > 0 is infeasible


def tell_out_of_memory(study: optuna.Study, trial: optuna.Trial) -> None:
    """Tell Optuna that `trial`'s params do not fit in memory, so that the sampler avoids them.

    Optuna 5 (as installed) learns constraints only from COMPLETE and PRUNED trials: TPE reads
    trials in those states (plus RUNNING) and ignores FAIL ones entirely
    (`samplers/_tpe/sampler.py` `_sample`, `_sample_relative`: `states = (COMPLETE, PRUNED)`), so a
    FAIL, with or without a constraint, teaches it nothing and it proposes the same region again.
    The trial is therefore told PRUNED (stopped before its budget, which is true) with the
    constraint set through `Trial.set_constraint` before the tell, stored as the
    system attr `constraints:out_of_memory` (`trial/_trial.py`). TPE puts every trial whose
    constraints sum above 0 in its own infeasible group, ranked after all complete and pruned ones
    (`_split_trials`, `_get_infeasible_trial_score`), i.e. in the "bad" density. The deprecated
    `TPESampler(constraints_func=...)` would not help: it is called from `after_trial` only for
    COMPLETE and PRUNED trials (`samplers/_base.py` `_process_constraints_after_trial`) and warns
    since 5.0. A trial without the constraint counts as feasible everywhere (best trial, TPE), so
    complete trials need none and older studies read the same. RandomSampler ignores constraints.
    That the trial ran out of memory is the harness's record (`TrialRecord.out_of_memory`): the
    report and MLflow say `oom`, never "pruned".
    """
    trial.set_constraint(MEMORY_CONSTRAINT, 1.0)
    study.tell(trial, state=TrialState.PRUNED)


def make_sampler(spec: SweepSpec, seed: int) -> optuna.samplers.BaseSampler:
    if spec.sampler.type == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(4, spec.budget.trials))


def open_study(spec: SweepSpec, space: dict[str, BaseDistribution] | None = None) -> optuna.Study:
    """The sweep's study; each trial's sampler seed follows from its number.

    With `space` (the supervisor) it is created with its definition, or loaded (resume, another
    worker) and checked against the spec. Without (a trial process) it must exist and is only
    checked for its objective: a trial never creates a study.
    """
    study = None
    with reported(OPTUNA_STORE, spec.storage_url, STORAGE_SETTING):
        storage = open_storage(spec.storage_url)
        if space is not None:
            try:
                study = optuna.create_study(
                    study_name=spec.name, storage=storage, directions=spec.directions, pruner=make_pruner(spec)
                )
            except (DuplicatedStudyError, SQLAlchemyError):  # it exists, or another worker created it just now
                study = None
            else:
                record_new(study, spec, space)
        if study is None:
            study = _load(spec, storage)
            check_study(spec, study, space, adopt=space is not None)
    study.sampler = TrialSeededSampler(lambda seed: make_sampler(spec, seed), spec.sampler.seed)
    return study


def find_study(spec: SweepSpec) -> optuna.Study | None:
    """The sweep's study if its storage holds one; creates nothing (no database file, no study)."""
    path = sqlite_path(spec.storage_url)
    if path is not None and not path.is_file():
        return None
    with reported(OPTUNA_STORE, spec.storage_url, STORAGE_SETTING):
        try:
            return optuna.load_study(
                study_name=spec.name, storage=open_storage(spec.storage_url), pruner=make_pruner(spec)
            )
        except KeyError:
            return None


def require_study(spec: SweepSpec) -> optuna.Study:
    """The sweep's study for reading (report, export); an error naming the storage if there is none."""
    study = find_study(spec)
    if study is not None:
        return study
    path = sqlite_path(spec.storage_url)
    if path is not None and not path.is_file():
        where = f"its {OPTUNA_STORE} {path} does not exist"
    else:
        where = f"the {OPTUNA_STORE} {store_name(spec.storage_url)} holds no study of that name"
    raise HarnessError(f"Sweep {spec.name!r} has no study yet: {where}; run `harness sweep {spec.name}` first.")


def _load(spec: SweepSpec, storage: RDBStorage) -> optuna.Study:
    try:
        return optuna.load_study(study_name=spec.name, storage=storage, pruner=make_pruner(spec))
    except KeyError:
        raise HarnessError(
            f"Sweep {spec.name!r} has no study in the {OPTUNA_STORE} {store_name(spec.storage_url)}; "
            f"run `harness sweep {spec.name}` first."
        ) from None


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
