"""Pruners: which trials stop early, judged at the validations a trial reports at `global_step`.

`median` compares a trial with the median of the complete ones (its latest value, or its best);
`successive_halving` and `hyperband` keep the best 1/`reduction_factor` of the trials at each rung, with the
rungs sized in steps from the budget so that each falls on a validation. No trial is judged before its
learning-rate warm-up ends (`n_warmup_steps: null`): a model still climbing to its peak rate says little
about where it ends; a trial whose searched warm-up outlasts a rung skips that rung (`WarmupSuccessiveHalving`).
The last validation never prunes (`callbacks.PruningReporter`): its steps are spent.
"""

from __future__ import annotations

import math
import statistics

import optuna
from optuna.pruners import BasePruner, HyperbandPruner, MedianPruner, NopPruner, SuccessiveHalvingPruner
from optuna.pruners._successive_halving import (
    _completed_rung_key,
    _get_competing_values,
    _is_trial_promotable_to_next_rung,
)
from optuna.trial import FrozenTrial, TrialState

from harness.canary import warmup_steps
from harness.directions import Direction
from harness.spec import BudgetSpec, SweepSpec

MEDIAN_STARTUP_TRIALS = 2  # complete trials the median needs before it judges (`pruner.n_startup_trials: null`)
REDUCTION_FACTOR = 3  # `pruner.reduction_factor: null`: each rung keeps the best third


def make_pruner(spec: SweepSpec) -> BasePruner:
    """The spec's pruner. Optuna cannot prune multi-objective trials, so a `pareto` sweep never prunes.

    An explicit `n_warmup_steps` holds for every trial; left out, each trial waits for its own warm-up
    (`TrialWarmup`: a searched `warmup_fraction` makes it differ between trials), and the pruner itself
    is sized for the budget's warm-up: a longer one skips the rungs it passes (`WarmupSuccessiveHalving`)."""
    p = spec.pruner
    if p.type == "none" or spec.multi_objective:
        return NopPruner()
    warmup = warmup_steps(spec.budget, {}) if p.n_warmup_steps is None else p.n_warmup_steps
    pruner: BasePruner
    if p.type == "median":
        median = MedianPruner if p.compare == "best" else LatestMedianPruner
        startup = MEDIAN_STARTUP_TRIALS if p.n_startup_trials is None else p.n_startup_trials
        pruner = median(n_startup_trials=startup, n_warmup_steps=warmup)
    else:
        factor = p.reduction_factor or REDUCTION_FACTOR
        first = first_rung(spec.budget, warmup)
        if p.n_warmup_steps is not None:  # one warm-up for every trial, and the first rung after it
            if p.type == "successive_halving":
                return SuccessiveHalvingPruner(min_resource=first, reduction_factor=factor)
            return HyperbandPruner(min_resource=first, max_resource=spec.budget.max_steps, reduction_factor=factor)
        if p.type == "successive_halving":
            pruner = WarmupSuccessiveHalving(spec.budget, min_resource=first, reduction_factor=factor)
        else:
            pruner = WarmupHyperband(
                spec.budget, min_resource=first, max_resource=spec.budget.max_steps, reduction_factor=factor
            )
    return pruner if p.n_warmup_steps is not None else TrialWarmup(pruner, spec.budget)


def first_rung(budget: BudgetSpec, warmup: int) -> int:
    """Successive halving's `min_resource`: the first validation at or after the warm-up (at most `max_steps`).

    Rung k is judged at `min_resource * reduction_factor**k` steps (`_successive_halving.py` `prune`), so a
    multiple of `val_check_interval` puts every rung on a validation: the value judged there is the one
    the trial reported at the rung, not one from up to an interval later."""
    interval = budget.val_check_interval
    return min(budget.max_steps, interval * max(1, math.ceil(warmup / interval)))


class TrialWarmup(BasePruner):
    """Judge a trial only once its own learning-rate warm-up is over, then as `inner` decides.

    Without it, a searched `warmup_fraction` above the budget's would be judged mid warm-up. Optuna treats a
    `HyperbandPruner` study pruner specially in one place only, the bracket view it gives `sampler.after_trial`
    (`pruners/__init__.py` `_filter_study`), which TPE, random and GP do not read: wrapping it loses nothing."""

    def __init__(self, inner: BasePruner, budget: BudgetSpec) -> None:
        self.inner = inner
        self._budget = budget

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < warmup_steps(self._budget, trial.params):
            return False
        return self.inner.prune(study, trial)


class WarmupSuccessiveHalving(SuccessiveHalvingPruner):
    """Successive halving in which a trial's rungs start after its own learning-rate warm-up.

    Optuna's pruner judges rung k once `step >= min_resource * reduction_factor**(min_early_stopping_rate + k)`
    with the value just reported, looping on through the rungs (`_successive_halving.py` `prune`). A trial
    whose searched `warmup_fraction` outlasts the first rungs is first judged late, and Optuna would file
    that one late value under every rung it passed: compared there with values from earlier steps, and
    making those rungs harder for every trial judged at them after it.

    Here the rungs a trial passes while warming up stay empty for it (no `completed_rung_<k>`), and a value
    is filed under one rung at most, so each rung compares values reported at the same step. Starting every
    trial's rungs after the longest warm-up the search space allows would be as fair, but would judge every
    trial that late (a space up to 0.5 of 200 steps leaves one rung), while most hopeless trials show early.
    A trial spared a rung was spared it only because it could not be judged yet; at its first rung it meets
    the values of the trials that went through the earlier ones.
    """

    def __init__(
        self,
        budget: BudgetSpec,
        *,
        min_resource: int,
        reduction_factor: int,
        min_early_stopping_rate: int = 0,
        bootstrap_count: int = 0,
    ) -> None:
        super().__init__(
            min_resource=min_resource,
            reduction_factor=reduction_factor,
            min_early_stopping_rate=min_early_stopping_rate,
            bootstrap_count=bootstrap_count,
        )
        self._budget = budget

    def rung_step(self, rung: int) -> int:
        """The step at which rung `rung` (of this bracket) judges a trial."""
        assert self._min_resource is not None  # always an int here: `make_pruner` passes it
        return self._min_resource * self._reduction_factor ** (self._min_early_stopping_rate + rung)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        warmup = warmup_steps(self._budget, trial.params)
        rung = 0
        while self.rung_step(rung) < warmup:  # passed while it warmed up: never filed
            rung += 1
        while _completed_rung_key(rung) in trial.system_attrs:
            rung += 1
        if step < self.rung_step(rung):
            return False
        value = trial.intermediate_values[step]
        if math.isnan(value):
            return True
        trials = study.get_trials(deepcopy=False)  # before filing: the value joins the competitors once
        key = _completed_rung_key(rung)
        study._storage.set_trial_system_attr(trial._trial_id, key, value)
        competing = _get_competing_values(trials, value, key)
        if len(competing) <= self._bootstrap_count:
            return True
        # Promoted: the next rung waits for the next value (Optuna's loop would file this one there too).
        return not _is_trial_promotable_to_next_rung(value, competing, self._reduction_factor, study.direction)


class WarmupHyperband(HyperbandPruner):
    """Hyperband whose brackets are `WarmupSuccessiveHalving`: each bracket's rungs start after a trial's warm-up.

    Optuna builds its brackets (plain successive halving, `min_early_stopping_rate` = bracket id) on the first
    `prune` (`_hyperband.py` `_try_initialization`); they are swapped for ours with the same settings."""

    def __init__(self, budget: BudgetSpec, *, min_resource: int, max_resource: int, reduction_factor: int) -> None:
        super().__init__(min_resource=min_resource, max_resource=max_resource, reduction_factor=reduction_factor)
        self._budget = budget

    def _try_initialization(self, study: optuna.Study) -> None:
        super()._try_initialization(study)
        self._pruners = [
            WarmupSuccessiveHalving(
                self._budget,
                min_resource=self._min_resource,
                reduction_factor=self._reduction_factor,
                min_early_stopping_rate=bracket,
                bootstrap_count=self._bootstrap_count,
            )
            for bracket in range(len(self._pruners))
        ]


class LatestMedianPruner(MedianPruner):
    """Median pruning on the trial's latest value instead of its best so far.

    Optuna's median pruner compares a trial's best intermediate value, so a fine-tune whose WER
    was fair at its first validation and then climbs (a decoder starting to hallucinate) is never
    stopped. Here the value just reported at step s meets the median of the complete trials'
    values at s.
    """

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
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
        return Direction.of(study.direction).better(median, latest)
