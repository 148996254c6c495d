"""The all-trials table: one row per trial, best first, shared by the console and the written report."""

from __future__ import annotations

from harness.names import run_name
from harness.number_text import number_text
from harness.report._retention import RETENTION_HEADERS, retention_cells, retention_note, shows_retention
from harness.report._summary import SweepSummary, ordered_trials, shown_value, state_text, trial_note, trial_steps
from harness.search_space import format_param
from harness.trial_record import TrialRecord, model_params

FINAL_COLUMNS = ("val_wer", "val_wer_normalized", "val_bleu")


def trial_rows(summary: SweepSummary) -> tuple[list[str], list[list[str]]]:
    """All trials as table rows, best first; with retention sets, each trial's retention WER and its change
    against the zero-shot baseline's."""
    params = {t.number: model_params(t) for t in summary.trials}  # `merge_alpha` too, judged after training
    names = sorted({p for values in params.values() for p in values})
    retention = shows_retention(summary)
    headers = ["trial", "state", "objective", *names, *FINAL_COLUMNS]
    headers += [*(RETENTION_HEADERS if retention else []), "steps", "seed", "note"]
    rows = []
    for t in ordered_trials(summary.trials, summary.study):
        record = TrialRecord.of(t)
        final = record.final
        rows.append(
            [
                run_name(t.number),
                state_text(t),
                number_text(shown_value(t)),
                *[format_param(params[t.number].get(n, "")) for n in names],
                *[number_text(final.get(column)) for column in FINAL_COLUMNS],
                *(retention_cells(summary, t) if retention else []),
                str(trial_steps(t) or ""),
                "" if record.seed is None else str(record.seed),
                "; ".join(note for note in (trial_note(t), retention_note(summary, t)) if note),
            ]
        )
    return headers, rows
