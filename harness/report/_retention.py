"""In-domain gain against retention loss: each trial's retention WER beside the zero-shot baseline's.

A trial the retention limit made infeasible carries the constraint Optuna was told (the increase
minus the limit, `harness.study.RETENTION_CONSTRAINT`); its note says by how much it forgets. The
limit is read back from that constraint, so the report says what was decided, not what the spec
says now.
"""

from __future__ import annotations

from optuna.trial import FrozenTrial, TrialState

from harness.names import run_name
from harness.number_text import number_text
from harness.report._comparison import comparison_rows, figure_names
from harness.report._summary import SweepSummary
from harness.retention import PREFIX, WER, forgets_text, wer_increase
from harness.study import RETENTION_CONSTRAINT
from harness.trial_record import TrialRecord

RETENTION_HEADERS = ["retention_wer", "retention change"]


def shows_retention(summary: SweepSummary) -> bool:
    """Whether any trial (or the baseline) was scored on retention sets."""
    return WER in (summary.baseline or {}) or any(WER in TrialRecord.of(t).final for t in summary.trials)


def retention_cells(summary: SweepSummary, trial: FrozenTrial) -> list[str]:
    """The trial's retention WER and its change against the zero-shot baseline's (empty where unknown)."""
    final = TrialRecord.of(trial).final
    increase = wer_increase(final, summary.baseline)
    return [number_text(final.get(WER)), "" if increase is None else f"{increase:+.4f}"]


def _judged(summary: SweepSummary, trial: FrozenTrial) -> tuple[float | None, float | None]:
    """(increase over the zero-shot retention WER, the constraint Optuna was told: increase minus the limit)."""
    increase = wer_increase(TrialRecord.of(trial).final, summary.baseline)
    return increase, trial.constraints.get(RETENTION_CONSTRAINT)


def retention_note(summary: SweepSummary, trial: FrozenTrial) -> str:
    """`forgets: retention WER +0.1200 > 0.05` for a trial the limit made infeasible, else empty."""
    increase, excess = _judged(summary, trial)
    if increase is None or excess is None or excess <= 0:
        return ""
    return forgets_text(increase, increase - excess)


def retention_verdict(summary: SweepSummary) -> str:
    """One line on what the best trial costs on the old domain; empty without retention figures."""
    best = summary.best
    if best is None:
        return ""
    increase, excess = _judged(summary, best)
    if increase is None:
        return ""
    limit = None if excess is None else increase - excess
    before, after = (summary.baseline or {})[WER], TrialRecord.of(best).final[WER]
    words = "loses ground on its old domain" if increase > 0 else "keeps its old domain"
    allowed = f", allowed {limit:+g}" if limit is not None else ""
    return (
        f"Retention: {run_name(best.number)} {words}: retention WER {number_text(before)} zero-shot -> "
        f"{number_text(after)} ({increase:+.4f}{allowed})."
    )


def retention_points(summary: SweepSummary) -> list[tuple[float, float, bool]]:
    """(retention WER change, objective, infeasible) per complete trial with both figures: the trade-off plot."""
    points = []
    for trial in summary.trials:
        increase, excess = _judged(summary, trial)
        if trial.state == TrialState.COMPLETE and trial.values and increase is not None:
            points.append((increase, trial.values[0], excess is not None and excess > 0))
    return points


def retention_rows(summary: SweepSummary) -> list[list[str]]:
    """Every retention figure (overall and per group), zero-shot against the best trial: the validation
    table's rows (`comparison_rows`) for the `retention_` figures."""
    baseline, final = summary.baseline or {}, summary.best_final
    return comparison_rows(figure_names([*baseline, *final], prefix=PREFIX), baseline, final)
