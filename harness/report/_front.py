"""New domain against old: every model the sweep judged, the Pareto front, and what each lever bought.

A complete trial that judged merges with the pretrained model (`harness.merging`) holds one model per
`merge_alpha`; a trial without holds one (the fine-tune as trained, alpha 1). Each is a point: its
objective on the validation set against its retention WER. The front is the points no other point
beats on both. With `objective.retention_max_wer_increase` the section names the best model within
the limit, and for each lever the sweep searched (merging; `replay_fraction`, when a param) the best
model within it without that lever: what the lever bought. Pruned trials are neither merged nor
scored on retention, so they are no points.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from optuna.trial import TrialState

from harness import plots
from harness.names import run_name
from harness.number_text import number_text
from harness.objective import objective_names, objective_value
from harness.report._blocks import Block, Heading, Table, Text
from harness.report._summary import SweepSummary
from harness.retention import WER, preference
from harness.search_space import MERGE_ALPHA
from harness.spec import SweepSpec
from harness.trial_record import TrialRecord

REPLAY = "replay_fraction"  # the replay lever's param (`data.replay`), when the search space has it
LEVER_HEADERS = ["levers", "best model within the limit", "objective", "retention_wer", "retention change"]


@dataclass(frozen=True)
class Model:
    """One judged model: a complete trial's merge at `alpha` (1: the fine-tune as trained)."""

    trial: int
    alpha: float
    objective: float  # the primary objective on the validation set
    retention: float  # retention WER
    replay: float  # the trial's `replay_fraction` (0 without the lever)
    handed_over: bool  # the merge its trial chose (its record, checkpoint and export)

    @property
    def name(self) -> str:
        return f"{run_name(self.trial)} at alpha {self.alpha:g}"


def judged_models(spec: SweepSpec, summary: SweepSummary) -> list[Model]:
    """Every complete trial's judged models with an objective and a retention WER (a repeat trained nothing)."""
    models = []
    for trial in summary.trials:
        record = TrialRecord.of(trial)
        if trial.state != TrialState.COMPLETE or record.repeat_of is not None:
            continue
        handed_over = 1.0 if record.merge_alpha is None else record.merge_alpha
        merges = {float(a): f for a, f in record.merges.items()} or {handed_over: record.final}
        replay = float(trial.params.get(REPLAY, 0.0))
        for alpha, figures in sorted(merges.items()):
            value = _objective(spec, figures)
            if value is not None and WER in figures:
                models.append(Model(trial.number, alpha, value, figures[WER], replay, alpha == handed_over))
    return models


def _objective(spec: SweepSpec, figures: dict) -> float | None:
    try:
        value = objective_value(figures, spec.objective)
    except (ValueError, KeyError):
        return None
    return value if math.isfinite(value) else None


def front(models: list[Model], sign: int) -> list[Model]:
    """The models no other beats on both (objective in the study's direction, retention WER lower), by objective."""

    def beats(a: Model, b: Model) -> bool:
        better = (sign * a.objective <= sign * b.objective, a.retention <= b.retention)
        return all(better) and (sign * a.objective < sign * b.objective or a.retention < b.retention)

    return sorted((m for m in models if not any(beats(o, m) for o in models)), key=lambda m: sign * m.objective)


def shows_front(spec: SweepSpec, summary: SweepSummary) -> bool:
    """Whether the sweep judged merges or weighs the retention WER as an objective."""
    merged = any(TrialRecord.of(t).merges for t in summary.trials)
    return merged or spec.objective.pareto_retention


def _limit_wer(spec: SweepSpec, summary: SweepSummary) -> float | None:
    """The highest retention WER the limit allows: the zero-shot one plus the allowed increase."""
    limit, baseline = spec.objective.retention_max_wer_increase, (summary.baseline or {}).get(WER)
    return None if limit is None or baseline is None else baseline + limit


def front_plot(spec: SweepSpec, summary: SweepSummary, out) -> plots.Plot:
    """The figure: every judged model, the front, the best model handed over, the zero-shot model and the limit."""
    models = judged_models(spec, summary)
    sign = summary.direction.sign
    on_front = {(m.trial, m.alpha) for m in front(models, sign)}
    best = summary.best.number if summary.best is not None else None
    points = [
        plots.FrontPoint(
            m.alpha, m.objective, m.retention, (m.trial, m.alpha) in on_front, m.handed_over and m.trial == best
        )
        for m in models
    ]
    baseline = summary.baseline or {}
    zero_shot = _objective(spec, baseline)
    start = (zero_shot, baseline[WER]) if zero_shot is not None and WER in baseline else None
    label = f"{objective_names(spec.objective)[0]} on the validation set ({summary.direction.word} is better)"
    return plots.merge_front(points, label, start, _limit_wer(spec, summary), out)


def front_blocks(spec: SweepSpec, summary: SweepSummary) -> list[Block]:
    """The section: what was judged, the front in words, and with a limit the best model within it and the levers."""
    if not shows_front(spec, summary):
        return []
    models = judged_models(spec, summary)
    blocks: list[Block] = [Heading("New domain against old: merges and the front")]
    if not models:
        return [*blocks, Text("No complete trial has both a validation objective and a retention WER yet.")]
    sign = summary.direction.sign
    frontier = front(models, sign)
    merged = sum(1 for m in models if m.alpha < 1)
    blocks.append(
        Text(
            f"{len(models)} models: the fine-tunes of {len(models) - merged} complete trials as trained (alpha 1) "
            f"and {merged} merges with the pretrained model, (1 - alpha) x pretrained + alpha x fine-tuned, judged "
            "after training without retraining (pruned trials are neither merged nor scored on retention). "
            f"{len(frontier)} are on the front (no other model has both a better objective and a lower retention "
            "WER): "
            + "; ".join(f"{m.name} ({number_text(m.objective)}, {number_text(m.retention)})" for m in frontier)
            + "."
        )
    )
    limit = _limit_wer(spec, summary)
    if limit is not None:
        blocks += _levers(spec, summary, models, limit)
    return blocks


def _levers(spec: SweepSpec, summary: SweepSummary, models: list[Model], limit: float) -> list[Block]:
    """The best model within the limit, with every lever and without each one."""
    sign = summary.direction.sign
    within = [m for m in models if m.retention <= limit + 1e-12]
    zero_shot = (summary.baseline or {})[WER]

    def best(keep: Callable[[Model], bool]) -> Model | None:
        chosen = (m for m in within if keep(m))
        return min(chosen, key=lambda m: preference(sign, m.objective, m.retention, m.alpha), default=None)

    replay = any(REPLAY in t.params for t in summary.trials)
    levers: list[tuple[str, Callable[[Model], bool]]] = [("all levers", lambda m: True)]
    levers.append(("no merge (alpha 1)", lambda m: m.alpha == 1))
    if replay:
        levers.append(("no replay (replay_fraction 0)", lambda m: m.replay == 0))
        levers.append(("neither lever", lambda m: m.alpha == 1 and m.replay == 0))
    rows = []
    for words, keep in levers:
        chosen = best(keep)
        if chosen is None:
            rows.append([words, "none keeps within the limit", "", "", ""])
        else:
            change = f"{chosen.retention - zero_shot:+.4f}"
            rows.append([words, chosen.name, number_text(chosen.objective), number_text(chosen.retention), change])
    overall = best(lambda m: True)
    lead = (
        f"Within the retention limit (retention WER <= {number_text(limit)}: zero-shot {number_text(zero_shot)} "
        f"+ {spec.objective.retention_max_wer_increase:g}), "
        + (f"the best model is {overall.name}." if overall else "no judged model keeps the old domain.")
    )
    return [
        Text(lead),
        Text("What each lever bought: the best model within the limit without it."),
        Table(LEVER_HEADERS, rows),
    ]


def merge_text(trial) -> str:
    """One sentence on a trial's merge, for the decision and `best.yaml`; empty for a trial that judged none."""
    record = TrialRecord.of(trial)
    if record.merge_alpha is None:
        return ""
    alpha, judged = record.merge_alpha, ", ".join(sorted(record.merges, key=float))
    weights = (
        "the fine-tune's as trained"
        if alpha == 1
        else f"(1 - {alpha:g}) x the pretrained model's + {alpha:g} x the fine-tuned ones"
    )
    return (
        f"Its weights are {weights} (`{MERGE_ALPHA}` {alpha:g}, chosen after training among {judged}); "
        "`harness export` writes exactly those, `harness reproduce` trains and merges again."
    )
