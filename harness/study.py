"""Optuna: storage, study, best trial, and out of memory told as an infeasible trial.

Optuna knowledge lives here and beside it: `pruners` (which trials stop early), `samplers` (per-trial
seeds, TPE / random / GP), `start_from` (the first trials' params). Trials run in their own processes; a
trial process reopens the study from the same storage and reports to its own trial id, so the pruner
sees every validation, not one per epoch like optuna-integration's Lightning callback.
"""

from __future__ import annotations

import warnings

import optuna
from optuna.distributions import BaseDistribution
from optuna.exceptions import DuplicatedStudyError, ExperimentalWarning
from optuna.pruners import BasePruner, NopPruner
from optuna.storages import RDBStorage
from optuna.study import StudyDirection
from optuna.trial import TrialState
from sqlalchemy.exc import SQLAlchemyError

from harness.definition import check_study, save_definition
from harness.directions import Direction
from harness.errors import StoreError
from harness.names import DECISION_ATTR, SPEC_FILE_ATTR
from harness.objective import objective_names
from harness.samplers import MEMORY_CONSTRAINT, TrialSeededSampler, make_sampler
from harness.spec import SweepSpec, project_path
from harness.start_from import enqueue_start_from
from harness.stores import (
    OPTUNA_STORE,
    STORAGE_SETTING,
    engine_kwargs,
    open_database,
    reported,
    sqlite_path,
    store_name,
)
from harness.trial_record import TrialRecord

optuna.logging.set_verbosity(optuna.logging.WARNING)


def open_storage(url: str) -> RDBStorage:
    """An RDB storage; SQLite waits for locks instead of failing when several processes write.

    A fresh SQLite file is created by one process at a time; an unreachable server or a file that
    is not a database is a one-line error (see harness.stores).
    """
    return open_database(url, lambda: RDBStorage(url, engine_kwargs=engine_kwargs(url)))


def training_seed(base: int, number: int) -> int:
    """The training seed of trial `number` (Lightning's seed_everything, data shuffling): recorded with the
    trial, so `harness reproduce` and the benchmarks' bare runs train exactly what the trial trained."""
    return base * 100_003 + number


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
    complete trials need none and older studies read the same. RandomSampler ignores constraints; GPSampler
    reads them from COMPLETE trials only, so it sees these through `harness.samplers.GPMemoryView`.
    That the trial ran out of memory is the harness's record (`TrialRecord.out_of_memory`): the
    report and MLflow say `oom`, never "pruned".
    """
    trial.set_constraint(MEMORY_CONSTRAINT, 1.0)
    study.tell(trial, state=TrialState.PRUNED)


RETENTION_CONSTRAINT = "retention_wer_increase"  # retention WER increase over the limit; > 0 is infeasible


def set_retention_constraint(trial: optuna.Trial, excess: float) -> None:
    """Before the trial is told COMPLETE: its retention WER increase minus the allowed one. Above 0 the trial
    is infeasible: `best_trial` skips it and TPE ranks it below every feasible trial (`_split_trials`).
    Feasible trials get their (<= 0) value too, so every judged trial carries the constraint."""
    trial.set_constraint(RETENTION_CONSTRAINT, excess)


def open_study(
    spec: SweepSpec, space: dict[str, BaseDistribution] | None = None, *, pruner: BasePruner
) -> optuna.Study:
    """The sweep's study for asking and telling; each trial's sampler seed follows from its number.

    With `space` (the supervisor) it is created with its definition, or loaded (resume, another
    worker) and checked against the spec. Without (a trial process) it must exist and is only
    checked for its objective: a trial never creates a study. `pruner` (`harness.pruners.make_pruner`)
    judges the trial process's reports, and Hyperband's brackets shape what the supervisor's sampler sees.
    """
    study = None
    with reported(OPTUNA_STORE, spec.storage_url, STORAGE_SETTING):
        storage = open_storage(spec.storage_url)
        if space is not None:
            try:
                directions = [StudyDirection[d.name] for d in spec.directions]
                study = optuna.create_study(study_name=spec.name, storage=storage, directions=directions, pruner=pruner)
            except (DuplicatedStudyError, SQLAlchemyError):  # it exists, or another worker created it just now
                study = None
            else:
                _record_spec_file(study, spec)  # first: a reader may look the sweep up by name at once
                save_definition(study, spec, space)
                enqueue_start_from(study, spec, space)  # only here: once per study, whatever the workers
                _name_objectives(study, spec)
        if study is None:
            study = _load(spec, storage, pruner)
            check_study(spec, study, space, adopt=space is not None)
            if space is not None:
                _record_spec_file(study, spec)
    study.sampler = TrialSeededSampler(lambda seed: make_sampler(spec, seed), spec.sampler.seed)
    return study


def _record_spec_file(study: optuna.Study, spec: SweepSpec) -> None:
    """The spec file the sweep (last) ran from, so that `harness export NAME` finds `path/to/NAME.yaml`
    (`harness.sweep_lookup`); written only when it changed."""
    if spec.source and study.user_attrs.get(SPEC_FILE_ATTR) != project_path(spec.source):
        study.set_user_attr(SPEC_FILE_ATTR, project_path(spec.source))


def _name_objectives(study: optuna.Study, spec: SweepSpec) -> None:
    """Name the study's objectives (`wer`, not "Objective 0" in optuna-dashboard and `trials_dataframe`).
    Optuna marks `set_metric_names` experimental; a study without names (an older one) reads the same."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        study.set_metric_names(objective_names(spec.objective))


def find_study(spec: SweepSpec) -> optuna.Study | None:
    """The sweep's study if its storage holds one, for reading; creates nothing (no database file, no study).
    Its pruner never judges (nothing reports through it), so none is built from the spec."""
    path = sqlite_path(spec.storage_url)
    if path is not None and not path.is_file():
        return None
    with reported(OPTUNA_STORE, spec.storage_url, STORAGE_SETTING):
        try:
            return optuna.load_study(study_name=spec.name, storage=open_storage(spec.storage_url), pruner=NopPruner())
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
    raise StoreError(f"Sweep {spec.name!r} has no study yet: {where}; run `harness sweep {spec.name}` first.")


def _load(spec: SweepSpec, storage: RDBStorage, pruner: BasePruner) -> optuna.Study:
    try:
        return optuna.load_study(study_name=spec.name, storage=storage, pruner=pruner)
    except KeyError:
        raise StoreError(
            f"Sweep {spec.name!r} has no study in the {OPTUNA_STORE} {store_name(spec.storage_url)}; "
            f"run `harness sweep {spec.name}` first."
        ) from None


def primary_value(trial: optuna.trial.FrozenTrial) -> float | None:
    """The first objective's value; `FrozenTrial.value` raises on multi-objective studies."""
    return trial.values[0] if trial.values else None


def feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """No constraint above 0 (Optuna's rule); a trial without constraints is feasible."""
    return all(value <= 0 for value in trial.constraints.values())


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best feasible complete trial; for a Pareto study, the front's trial with the best first objective.
    None when no trial completed or every complete one is infeasible (Optuna raises ValueError then).
    A repeat ties with the trial it repeats: that one, which trained, is the best (checkpoint, run, seed).
    Once seed confirmation has decided (`harness.confirmation`), the decision's run is the best."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    decided = (study.user_attrs.get(DECISION_ATTR) or {}).get("model_trial")
    chosen = next((t for t in complete if t.number == decided), None)
    if chosen is not None:
        return chosen
    if not any(feasible(t) for t in complete):
        return None
    if len(study.directions) == 1:
        return trained_trial(study, study.best_trial)
    sign = Direction.of(study.directions[0]).sign
    return trained_trial(study, min(study.best_trials, key=lambda t: (sign * t.values[0], t.number)))


def runner_up(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best feasible complete trial of another setting than the best's (a repeat or a seed-confirmation run
    of the best's setting is no rival), by the first objective: the best's closest rival, which the intervals
    (`harness.intervals`) tell apart from it or not. None without one."""
    best = best_trial(study)
    if best is None:
        return None
    sign = Direction.of(study.directions[0]).sign
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    trained = {t.number: t for t in (trained_trial(study, c) for c in complete if feasible(c))}
    ranked = [t for t in trained.values() if t.params != best.params and primary_value(t) is not None]
    return min(ranked, key=lambda t: (sign * (primary_value(t) or 0.0), t.number), default=None)


def trained_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> optuna.trial.FrozenTrial:
    """The trial that trained what `trial` stands for: itself, or for a repeat the trial it repeats."""
    source = TrialRecord.of(trial).repeat_of
    if source is None:
        return trial
    return next((t for t in study.get_trials(deepcopy=False) if t.number == source), trial)


def no_best_reason(study: optuna.Study) -> str:
    """Why `best_trial` is None, in words: nothing completed, or every complete trial is infeasible."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return "no trial has completed yet"
    broken = sorted({name for t in complete for name, value in t.constraints.items() if value > 0})
    return f"no feasible trial: all {len(complete)} complete trials break a constraint ({', '.join(broken)})"


def trial_handle(study: optuna.Study, trial_id: int) -> optuna.Trial:
    """The running trial as seen from the trial process (report / should_prune)."""
    return optuna.trial.Trial(study, trial_id)
