"""The report's "Custom behaviours" section: did the trials learn each behaviour the sweep declares?

For every behaviour (`behaviours`), the validation figures on the lines with it on and on those
with it off (`val_wer/terse_on`, `val_wer/terse_off`: scored by `harness.scoring` like the
per-pair figures), zero-shot against the best trial, a one-line reading, and the same figure for
every complete trial. The zero-shot baseline reads the user's manifests without the tokens: its
figures are the pretrained model's on the same lines, the level a behaviour starts from.
"""

from __future__ import annotations

from collections.abc import Mapping

from optuna.trial import TrialState

from harness.directions import figure_direction
from harness.names import run_name
from harness.number_text import number_text
from harness.report._blocks import Block, Heading, Table, Text
from harness.report._comparison import COMPARISON_HEADERS, comparison_rows
from harness.report._summary import SweepSummary, ordered_trials, shown_value
from harness.scoring import BLEU, WER, WER_NORMALIZED, behaviour_group
from harness.spec import SweepSpec
from harness.trial_record import TrialRecord

FIGURES = (WER, WER_NORMALIZED, BLEU)
STATES = (True, False)
UNCHANGED = 0.01  # a change smaller than this (figures are 0..1 fractions) reads as no change
LABELS = {WER: "WER", WER_NORMALIZED: "normalised WER", BLEU: "BLEU"}
INTRO = (
    "Validation figures on the lines where each behaviour is on and where it is off (`_on` / `_off`), computed "
    "like the per-pair ones. Zero-shot is the pretrained model on the same lines, without the tokens. A behaviour "
    f"reads as learnt when neither state scores worse than zero-shot and at least one improved (by more than "
    f"{UNCHANGED}); a token the model ignores usually leaves one state behind. Each trial's "
    "`predictions/predictions.jsonl` artifact shows every line's hypothesis with its behaviours."
)


def behaviour_metrics(spec: SweepSpec) -> set[str]:
    """Every per-behaviour validation figure the sweep can record."""
    return {_metric(figure, name, state) for figure in FIGURES for name in spec.behaviours for state in STATES}


def behaviour_blocks(spec: SweepSpec, summary: SweepSummary) -> list[Block]:
    """The section; nothing for a sweep without custom behaviours."""
    if not spec.behaviours:
        return []
    baseline, final = summary.baseline or {}, summary.best_final
    blocks: list[Block] = [Heading("Custom behaviours"), Text(INTRO)]
    for name in sorted(spec.behaviours):
        names = [_metric(f, name, s) for f in FIGURES for s in STATES]
        names = [n for n in names if n in baseline or n in final]
        blocks.append(Text(reading(spec, name, baseline, final)))
        if names:
            blocks.append(Table(COMPARISON_HEADERS, comparison_rows(names, baseline, final)))
    return blocks + _every_trial(spec, summary)


def reading(spec: SweepSpec, name: str, baseline: Mapping[str, float], final: Mapping[str, float]) -> str:
    """`terse`: on WER 0.9100 -> 0.1200, off WER 0.3000 -> 0.2000 (zero-shot -> best trial): learnt."""
    if not final and not baseline:
        return f"`{name}`: no validation figures recorded yet."
    figure = reading_figure(spec, name, final or baseline)
    if figure is None:
        return f"`{name}`: no figure covers lines with it on and lines with it off; the validation set needs both."
    label = LABELS[figure]
    if not final:
        states = ", ".join(f"{_word(s)} {label} {_value(baseline, figure, name, s)}" for s in STATES)
        return f"`{name}`: zero-shot {states}; no trial has completed yet."
    if not all(_metric(figure, name, s) in baseline for s in STATES):  # none, or one scored before behaviours were
        states = ", ".join(f"{_word(s)} {label} {_value(final, figure, name, s)}" for s in STATES)
        return f"`{name}`: best trial {states}; no zero-shot baseline figures to compare with (`budget.baseline`)."
    states = ", ".join(
        f"{_word(s)} {label} {_value(baseline, figure, name, s)} -> {_value(final, figure, name, s)}" for s in STATES
    )
    return f"`{name}`: {states} (zero-shot -> best trial): {_verdict(figure, name, baseline, final)}."


def reading_figure(spec: SweepSpec, name: str, values: Mapping[str, float]) -> str | None:
    """The figure the reading uses: the objective's where it covers both states, else the first that does."""
    preferred = spec.objective.metric if spec.objective.metric in FIGURES else WER
    for figure in dict.fromkeys((preferred, *FIGURES)):
        if all(_metric(figure, name, state) in values for state in STATES):
            return figure
    return None


def _verdict(figure: str, name: str, baseline: Mapping[str, float], final: Mapping[str, float]) -> str:
    sign = figure_direction(figure).sign
    gains = {s: sign * (baseline[_metric(figure, name, s)] - final[_metric(figure, name, s)]) for s in STATES}
    worse = [_word(s) for s, gain in gains.items() if gain < -UNCHANGED]
    if worse:
        return f"not learnt: the {' and '.join(worse)} lines got worse"
    if any(gain > UNCHANGED for gain in gains.values()):
        return "learnt"
    return "not learnt: no change from zero-shot"


def _every_trial(spec: SweepSpec, summary: SweepSummary) -> list[Block]:
    """Each behaviour's reading figure for the baseline and every complete trial, best first."""
    complete = [t for t in ordered_trials(summary.trials, summary.study) if t.state == TrialState.COMPLETE]
    baseline, final = summary.baseline or {}, summary.best_final
    columns = [
        _metric(figure, name, state)
        for name in sorted(spec.behaviours)
        if (figure := reading_figure(spec, name, final or baseline)) is not None
        for state in STATES
    ]
    if len(complete) < 2 or not columns:
        return []
    rows = [["zero-shot baseline", "", *(number_text(baseline.get(c)) for c in columns)]] if baseline else []
    for t in complete:
        record = TrialRecord.of(t).final
        rows.append([run_name(t.number), number_text(shown_value(t)), *(number_text(record.get(c)) for c in columns)])
    return [Text("Every complete trial, best first:"), Table(["run", "objective", *columns], rows)]


def _metric(figure: str, name: str, state: bool) -> str:
    return f"val_{figure}/{behaviour_group(name, state)}"


def _value(values: Mapping[str, float], figure: str, name: str, state: bool) -> str:
    return number_text(values.get(_metric(figure, name, state)))


def _word(state: bool) -> str:
    return "on" if state else "off"
