"""The best trial's figures against the zero-shot baseline's: one row builder for every table that compares them.

The validation table, the retention table and each custom behaviour's table list a figure, its zero-shot and
best-trial values, the change and which way is better, so they read one rule (`harness.directions`) and
cannot disagree on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from harness.directions import Direction, figure_direction
from harness.number_text import number_text

COMPARISON_HEADERS = ["metric", "baseline", "best trial", "change", "better is"]


def figure_names(names: Iterable[str], prefix: str = "val_") -> list[str]:
    """The WER and BLEU figures among `names` that carry `prefix`: WERs then BLEU, each overall before its
    per-group values (`val_wer/en-en`, `val_wer/terse_on`)."""
    wanted = {n for n in names if n.startswith((f"{prefix}wer", f"{prefix}bleu"))}
    return sorted(wanted, key=lambda n: (figure_direction(n) is not Direction.MINIMIZE, "/" in n, n))


def comparison_rows(names: Iterable[str], baseline: Mapping[str, float], final: Mapping[str, float]) -> list[list[str]]:
    """Per figure: zero-shot, the best trial, the change and which way is better (COMPARISON_HEADERS)."""
    rows = []
    for name in names:
        before, after = baseline.get(name), final.get(name)
        change = f"{after - before:+.4f}" if before is not None and after is not None else ""
        rows.append([name, number_text(before), number_text(after), change, figure_direction(name).word])
    return rows
