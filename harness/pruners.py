"""Pruners: which trials stop early, judged at the validations a trial reports at `global_step`.

`median` compares a trial with the median of the complete ones (its latest value, or its best);
`successive_halving` and `hyperband` keep the best 1/`reduction_factor` of the trials at each rung, with the
rungs sized in steps from the budget so that each falls on a validation. No trial is judged before its
learning-rate warm-up ends (`n_warmup_steps: null`): a model still climbing to its peak rate says little
about where it ends. The last validation never prunes (`callbacks.PruningReporter`): its steps are spent.
"""

from __future__ import annotations

import math
import statistics

import optuna
from optuna.pruners import BasePruner, HyperbandPruner, MedianPruner, NopPruner, SuccessiveHalvingPruner
from optuna.trial import FrozenTrial, TrialState

from harness.canary import warmup_steps
from harness.spec import BudgetSpec, SweepSpec

MEDIAN_STARTUP_TRIALS = 2  # complete trials the median needs before it judges (`pruner.n_startup_trials: null`)
REDUCTION_FACTOR = 3  # `pruner.reduction_factor: null`: each rung keeps the best third


def make_pruner(spec: SweepSpec) -> BasePruner:
    """The spec's pruner. Optuna cannot prune multi-objective trials, so a `pareto` sweep never prunes.

    An explicit `n_warmup_steps` holds for every trial; left out, each trial waits for its own warm-up
    (`TrialWarmup`: a searched `warmup_fraction` makes it differ between trials), and the pruner itself
    is sized for the budget's warm-up."""
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
        if p.type == "successive_halving":
            pruner = SuccessiveHalvingPruner(min_resource=first, reduction_factor=factor)
        else:
            pruner = HyperbandPruner(min_resource=first, max_resource=spec.budget.max_steps, reduction_factor=factor)
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
        return latest < median if study.direction == optuna.study.StudyDirection.MAXIMIZE else latest > median
