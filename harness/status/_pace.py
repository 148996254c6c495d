"""When a sweep will end, from its trials' own pace: how long its trials took, and how many run at once.

A search trial is expected to take the mean wall time of the search trials that finished (pruned and out of
memory ones included: the mix is the pace); before any finished, a running trial's time so far scaled to the
full budget of steps at its last report. Seed-confirmation runs train the full length, unpruned: the mean of
the finished ones, else of the complete search trials. The trials still to run are dealt to as many slots as
trials run now, each slot free once its running trial has had its expected time; confirmation starts when the
whole search has ended, as the supervisor does. A re-queued failure's time is no pace (it was stopped).
"""

from __future__ import annotations

import datetime
import heapq
import statistics
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from harness.trial_record import TrialRecord


@dataclass(frozen=True)
class Eta:
    """Seconds until the sweep ends (None: not known, `why` says why), and what the estimate rests on."""

    seconds: float | None
    per_trial: float | None  # a search trial's expected seconds
    at_once: int  # trials running now
    left: int  # trials still to start: search and confirmation
    why: str = ""


def estimate_eta(
    search: list[FrozenTrial],
    confirmations: list[FrozenTrial],
    *,
    search_left: int,
    confirm_runs: int,
    max_steps: int,
    now: datetime.datetime,
) -> Eta:
    """`search_left`: search trials still to start; `confirm_runs`: the confirmation runs planned in all (0 once
    the decision is recorded, or without)."""
    per_search = _first(_mean(_durations(search)), _from_steps(search, max_steps, now))
    complete = [t for t in search if t.state == TrialState.COMPLETE]
    per_confirmation = _first(_mean(_durations(confirmations)), _mean(_durations(complete)), per_search)
    confirm_left = max(0, confirm_runs - sum(_counted(t) for t in confirmations))
    running = [t for t in search if t.state == TrialState.RUNNING]
    confirming = [t for t in confirmations if t.state == TrialState.RUNNING]
    at_once, left = len(running) + len(confirming), search_left + confirm_left
    if not at_once:
        why = "finished" if left == 0 else "no trial is running (resume it with `harness sweep` or `harness launch`)"
        return Eta(0.0 if left == 0 else None, per_search, 0, left, why)
    if per_search is None or per_confirmation is None:
        return Eta(None, None, at_once, left, "no trial has finished or reported a step yet")
    slots = [max(0.0, per_search - _elapsed(t, now)) for t in running]
    slots += [max(0.0, per_confirmation - _elapsed(t, now)) for t in confirming]
    heapq.heapify(slots)
    for _ in range(search_left):
        heapq.heappush(slots, heapq.heappop(slots) + per_search)
    if confirm_left:
        slots = [max(slots)] * len(slots)  # confirmation waits for the whole search
        for _ in range(confirm_left):
            heapq.heappush(slots, heapq.heappop(slots) + per_confirmation)
    return Eta(max(slots), per_search, at_once, left)


def _counted(trial: FrozenTrial) -> bool:
    """Started and not re-queued: it spent (or spends) its place."""
    if trial.state == TrialState.FAIL:
        return not TrialRecord.of(trial).requeued
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


def _durations(trials: list[FrozenTrial]) -> list[float]:
    return [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in trials
        if t.state.is_finished() and _counted(t) and t.datetime_start and t.datetime_complete
    ]


def _from_steps(trials: list[FrozenTrial], max_steps: int, now: datetime.datetime) -> float | None:
    """Before any trial finished: each running trial's time so far, scaled from its last reported step."""
    paces = [
        _elapsed(t, now) * max_steps / max(t.intermediate_values)
        for t in trials
        if t.state == TrialState.RUNNING and t.intermediate_values and max(t.intermediate_values) > 0
    ]
    return _mean(paces)


def _elapsed(trial: FrozenTrial, now: datetime.datetime) -> float:
    return max(0.0, (now - trial.datetime_start).total_seconds()) if trial.datetime_start else 0.0


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _first(*estimates: float | None) -> float | None:
    return next((e for e in estimates if e is not None), None)
