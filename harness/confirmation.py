"""Seed confirmation: the decision ranks settings by their mean over training seeds, not by one lucky run.

One fine-tune of Canary is one sample: the same setting with another seed can land 2-3x apart in WER, as far apart
as most settings the search ranks. With `budget.confirm: {top: K, seeds: S}` the K best distinct settings of the
search each train S more times (new seeds, full length, unpruned), as trials of the study marked `confirms`
(`TrialRecord.confirms`: the search trial whose setting they repeat). The winner is the best mean over a setting's
complete runs, the search run included. Whether it is separable from the runner-up is Welch's t-interval over the
runs' seeds (two runs each give a wide one, as they should): when the interval of the difference of means includes 0
(or a setting has one run), the cheapest setting among those not separable from the best mean and within
`confirm.cheaper_within` (10%) of it is chosen instead (something frozen before nothing frozen, then the smaller
`batch_duration`), and the decision says so. Without that closeness, the cheaper rule picked settings 80% worse in
replays of real runs (benchmarks/decision.py). The model handed over (test set, export, reproduce) is the chosen
setting's best confirmation run (they always keep their checkpoint; the search run's may have been deleted by
`keep_checkpoints: best`): a real run of that setting, whose test figure is measured on data no choice was made on.
The decision is kept in a study attribute, which `study.best_trial` follows, so every reader of "the best trial"
follows the decision.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.directions import Direction
from harness.names import DECISION_ATTR
from harness.spec import SweepSpec
from harness.study import feasible
from harness.trial_record import TrialRecord


def is_confirmation(trial: FrozenTrial | optuna.Trial) -> bool:
    return TrialRecord.of(trial).confirms is not None


def budget_used(trials: Iterable[FrozenTrial]) -> int:
    """Search trials that count against `budget.trials`: decided ones (out of memory too; a re-queued failure
    does not) and running ones. Confirmation runs have their own budget (`budget.confirm`)."""
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return sum(
        not is_confirmation(t)
        and (t.state in counted or (t.state == TrialState.FAIL and not TrialRecord.of(t).requeued))
        for t in trials
    )


def _key(params: dict) -> tuple:
    return tuple(sorted(params.items()))


def candidates(study: optuna.Study, spec: SweepSpec) -> list[FrozenTrial]:
    """The search's `confirm.top` best distinct settings, best first: one complete feasible search trial each
    (a repeat stands for the trial it repeats, which trained)."""
    assert spec.budget.confirm is not None
    sign = spec.direction.sign
    searched = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not is_confirmation(t) and TrialRecord.of(t).repeat_of is None and feasible(t) and t.values
    ]
    chosen: dict[tuple, FrozenTrial] = {}
    for trial in sorted(searched, key=lambda t: (sign * t.values[0], t.number)):
        chosen.setdefault(_key(trial.params), trial)
    return list(chosen.values())[: spec.budget.confirm.top]


def runs_to_queue(study: optuna.Study, spec: SweepSpec) -> list[FrozenTrial]:
    """One entry per confirmation run still to queue: a candidate, once for each seed it lacks. A run that
    is queued, running, complete, pruned or out of memory counts; a failure is re-queued by its retry."""
    assert spec.budget.confirm is not None
    counted = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    have: dict[int, int] = {}
    for t in study.get_trials(deepcopy=False, states=counted):
        record = TrialRecord.of(t)
        if record.confirms is not None and not (t.state == TrialState.FAIL and record.requeued):
            have[record.confirms] = have.get(record.confirms, 0) + 1
    missing = []
    for trial in candidates(study, spec):
        missing += [trial] * max(0, spec.budget.confirm.seeds - have.get(trial.number, 0))
    return missing


def queue_runs(study: optuna.Study, spec: SweepSpec) -> int:
    """Queue the missing confirmation runs (Optuna's `enqueue_trial`: fixed params, any worker runs them).
    Two workers queueing at the same moment can add one seed too many to a setting: it only adds a sample."""
    missing = runs_to_queue(study, spec)
    for trial in missing:
        study.enqueue_trial(dict(trial.params), user_attrs=TrialRecord.attrs(confirms=trial.number))
    return len(missing)


@dataclass(frozen=True)
class Setting:
    """One confirmed setting: its search trial and the values of its complete runs (search run first)."""

    trial: int
    params: dict
    runs: tuple[int, ...]
    values: tuple[float, ...]
    best_run: int  # the run whose checkpoint stands for the setting: its best confirmation run

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def sd(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else float("nan")

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def cost(self) -> tuple:
        """Cheaper first: something frozen before nothing frozen, then the smaller `batch_duration`."""
        return (self.params.get("freeze", "none") == "none", self.params.get("batch_duration", 0))


@dataclass(frozen=True)
class Decision:
    """The confirmed decision: every setting, the chosen one, and how sure the choice over the runner-up is."""

    settings: tuple[Setting, ...]  # best mean first
    chosen: int  # the search trial number of the chosen setting
    low: float | None  # 95% interval (Welch, over seeds) of runner-up mean minus best mean, signed so that
    high: float | None  # > 0 means worse than the best; None with one setting, or one run of either
    reason: str

    @property
    def setting(self) -> Setting:
        return next(s for s in self.settings if s.trial == self.chosen)

    @property
    def separable(self) -> bool:
        return self.low is not None and self.low > 0

    def record(self) -> dict:
        """What the study keeps (`DECISION_ATTR`), JSON only."""
        return {
            "model_trial": self.setting.best_run,
            "chosen": self.chosen,
            "low": self.low,
            "high": self.high,
            "reason": self.reason,
            "settings": [
                {
                    "trial": s.trial,
                    "params": s.params,
                    "runs": list(s.runs),
                    "values": list(s.values),
                    "best_run": s.best_run,
                }
                for s in self.settings
            ],
        }

    @classmethod
    def read(cls, study: optuna.Study) -> Decision | None:
        raw = study.user_attrs.get(DECISION_ATTR)
        if not raw:
            return None
        settings = tuple(
            Setting(s["trial"], s["params"], tuple(s["runs"]), tuple(s["values"]), s["best_run"])
            for s in raw["settings"]
        )
        return cls(settings, raw["chosen"], raw["low"], raw["high"], raw["reason"])


def settings(study: optuna.Study, spec: SweepSpec) -> list[Setting]:
    """Each candidate with its complete feasible runs (the search run and its confirmations), best mean first."""
    sign = spec.direction.sign
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    found = []
    for trial in candidates(study, spec):
        runs = [trial] + [t for t in complete if TrialRecord.of(t).confirms == trial.number and feasible(t)]
        # Confirmation runs always keep their checkpoint; the search run's may be gone (`keep_checkpoints: best`).
        best = min(runs[1:] or runs, key=lambda t: (sign * t.values[0], t.number))
        found.append(
            Setting(
                trial.number,
                dict(trial.params),
                tuple(t.number for t in runs),
                tuple(float(t.values[0]) for t in runs),
                best.number,
            )
        )
    return sorted(found, key=lambda s: (sign * s.mean, s.trial))


def gap_interval(best: Setting, other: Setting, direction: Direction) -> tuple[float, float] | None:
    """95% interval of how much worse `other`'s mean is than `best`'s (> 0: worse): Welch's t-interval over the
    runs' seeds, whose width follows each setting's own spread and few runs (2 runs each: a t quantile of ~12).
    A percentile bootstrap of 2-3 values per setting would claim certainty it does not have. None when a setting
    has a single run: its spread is unknown, so nothing can be told apart."""
    if best.n < 2 or other.n < 2:
        return None
    from scipy import stats  # only once a decision is made: the supervisor and the report start without it

    gap = direction.sign * (other.mean - best.mean)
    shares = (best.sd**2 / best.n, other.sd**2 / other.n)
    error = math.sqrt(sum(shares))
    if error == 0:
        return gap, gap
    freedom = sum(shares) ** 2 / (shares[0] ** 2 / (best.n - 1) + shares[1] ** 2 / (other.n - 1))
    half = float(stats.t.ppf(0.975, freedom)) * error
    return gap - half, gap + half


def decide(study: optuna.Study, spec: SweepSpec) -> Decision | None:
    """The decision over the confirmed settings; None before any candidate exists."""
    ranked = settings(study, spec)
    if not ranked:
        return None
    best = ranked[0]
    if len(ranked) == 1:
        return Decision(tuple(ranked), best.trial, None, None, f"only one setting was confirmed (n={best.n})")
    gaps = {s.trial: gap_interval(best, s, spec.direction) for s in ranked[1:]}
    low, high = gaps[ranked[1].trial] or (None, None)
    # Only a setting that is both not separable and close: with 2-3 runs Welch's interval is wide enough to take in
    # settings 80% worse, and preferring the cheaper of all of them raised the demo's decision regret 20-fold.
    within = spec.budget.confirm.cheaper_within if spec.budget.confirm else 0.0
    close = [s for s in ranked[1:] if abs(s.mean - best.mean) <= within * abs(best.mean)]
    tied = [best] + [s for s in close if (gaps[s.trial] or (0.0, 0.0))[0] <= 0]
    cheapest = min(tied, key=lambda s: (s.cost, spec.direction.sign * s.mean))
    if low is not None and low > 0:
        reason = f"trial-{best.trial:04d}'s setting has the best mean and is separable from the runner-up"
    elif cheapest is best:
        reason = (
            f"trial-{best.trial:04d}'s setting has the best mean but is not separable from the runner-up "
            f"(the interval includes 0, or a setting has one run); no cheaper setting's mean is within "
            f"{within:.0%} of it"
        )
    else:
        reason = (
            f"no setting is separable from trial-{best.trial:04d}'s (best mean; the interval includes 0), so the "
            f"cheaper trial-{cheapest.trial:04d} setting, whose mean is within {within:.0%} of it, is chosen "
            "(something frozen before nothing frozen, then the smaller batch_duration)"
        )
    return Decision(tuple(ranked), cheapest.trial, low, high, reason)
