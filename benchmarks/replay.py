"""Replaying a pruner over real learning curves: what a pruned sweep would have trained and found.

The curves come from an unpruned sweep (every trial trained its full budget). The pruner is the harness's
own, built from a sweep spec by `harness.pruners.make_pruner`, judging an in-memory Optuna study as the trial
processes judge the real one: each trial reports its objective at each validation step and asks
`should_prune`, except at its last validation (the harness never prunes a trial that has finished
training). Trials run on `slots` slots in number order with time counted in steps, so a report only
meets the trials that had completed by then, as in a live sweep of that many slots.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.spec import SweepSpec


@dataclass
class Curve:
    """One trial of an unpruned sweep."""

    number: int
    params: dict
    values: dict[int, float]  # objective reported at each validation step
    steps: int  # steps trained
    final: float | None  # the objective Optuna was told (None if the trial did not complete)
    state: str = "COMPLETE"

    @property
    def params_text(self) -> str:
        from harness.search_space import format_param

        return " ".join(f"{k}={format_param(v)}" for k, v in self.params.items())

    @property
    def final_text(self) -> str:
        return "-" if self.final is None else f"{self.final:.4f}"

    @property
    def curve_text(self) -> str:
        return " ".join(f"{step}:{value:.2f}" for step, value in sorted(self.values.items()))


@dataclass
class Replay:
    """What the pruned sweep would have spent and found, against the unpruned one."""

    steps: int
    unpruned_steps: int
    best: float
    unpruned_best: float
    direction: str
    complete: int
    pruned_at: dict[int, int] = field(default_factory=dict)  # trial number -> step

    @property
    def saved(self) -> float:
        return 1 - self.steps / max(1, self.unpruned_steps)

    @property
    def gap(self) -> float:
        """How much worse the pruned best is, relative (0 when equal or better)."""
        if math.isnan(self.best) or not self.unpruned_best:
            return math.inf
        worse = self.best - self.unpruned_best if self.direction == "minimize" else self.unpruned_best - self.best
        return max(0.0, worse / abs(self.unpruned_best))

    @property
    def pruned_numbers(self) -> list[int]:
        return sorted(self.pruned_at)

    def row(self) -> tuple:
        pruned = " ".join(f"{n}@{s}" for n, s in sorted(self.pruned_at.items())) or "-"
        return (
            self.steps,
            self.unpruned_steps,
            f"{100 * self.saved:.1f}",
            f"{self.best:.4f}",
            f"{self.unpruned_best:.4f}",
            f"{100 * self.gap:.1f}",
            self.complete,
            pruned,
        )


def replay(spec: SweepSpec, curves: list[Curve], slots: int) -> Replay:
    """Run `spec`'s pruner over `curves` on `slots` slots; trials that did not complete are left out.

    An event loop in steps: a trial starts when a slot frees (in number order), reports at each of its
    validation steps, and frees its slot when it completes or is pruned."""
    import optuna
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    from harness.pruners import make_pruner

    curves = [c for c in curves if c.final is not None and c.values]
    direction = StudyDirection[spec.direction.name]
    study = optuna.create_study(study_name=spec.name, direction=direction, pruner=make_pruner(spec))
    events: list[tuple[int, int, int]] = []  # (time in steps, curve index, report index)
    trials: dict[int, optuna.Trial] = {}
    pruned_at: dict[int, int] = {}
    waiting = list(range(len(curves)))

    def start(now: int) -> None:
        index = waiting.pop(0)
        trials[index] = study.ask()
        heapq.heappush(events, (now + min(curves[index].values), index, 0))

    for _ in range(min(max(1, slots), len(waiting))):
        start(0)
    while events:
        now, index, n = heapq.heappop(events)
        curve, trial = curves[index], trials[index]
        steps = sorted(curve.values)
        trial.report(curve.values[steps[n]], steps[n])
        if n == len(steps) - 1:
            study.tell(trial, curve.final)
        elif trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
            pruned_at[curve.number] = steps[n]
        else:
            heapq.heappush(events, (now + steps[n + 1] - steps[n], index, n + 1))
            continue
        if waiting:
            start(now)
    better = min if spec.direction == "minimize" else max
    finals = {c.number: c.final for c in curves if c.final is not None}  # every curve left has one
    complete = [final for number, final in finals.items() if number not in pruned_at]
    return Replay(
        steps=sum(pruned_at.get(c.number, c.steps) for c in curves),
        unpruned_steps=sum(c.steps for c in curves),
        best=better(complete) if complete else math.nan,
        unpruned_best=better(finals.values()),
        direction=spec.direction,
        complete=len(complete),
        pruned_at=pruned_at,
    )
