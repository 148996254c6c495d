"""How sure: each comparison the report makes (best trial against the zero-shot baseline and the runner-up, on
the validation and test sets) with its paired bootstrap interval, from the runs' predictions files.

The report computes them itself from `predictions.jsonl` (`harness.intervals.sweep_comparisons`, the function
whose figures the sweep logged on its parent run as `ci_*`): the same files, seed and resample count give
the same numbers, and a report made after a resume compares the current best trial.
"""

from __future__ import annotations

from harness.intervals import DEFAULT_RESAMPLES, sweep_comparisons
from harness.report._blocks import Block, Heading, Table, Text
from harness.report._summary import SweepSummary
from harness.spec import SweepSpec

INTERVAL_HEADERS = ["set", "best trial against", "figure", "best minus other [95% interval]"]
_SETS = {"val": "validation", "test": "test"}


def interval_blocks(spec: SweepSpec, summary: SweepSummary) -> list[Block]:
    """One row per figure and comparison; a line for each comparison that could not be made, and why."""
    comparisons = sweep_comparisons(spec, summary.study)
    if not comparisons:
        return []
    rows = [
        [_SETS[c.split], c.label, figure, interval.text]
        for c in comparisons
        for figure, interval in c.intervals.items()
    ]
    missing = [f"{_SETS[c.split]} set against {c.label}: {c.missing}." for c in comparisons if not c.intervals]
    blocks: list[Block] = [
        Heading("How sure: intervals on each comparison"),
        Text(
            "Paired bootstrap over utterances (Bisani & Ney 2004): the set's lines resampled with replacement, "
            f"the same lines for both systems, {DEFAULT_RESAMPLES} times with seed {spec.training.seed} "
            "(`training.seed`); each row is the best trial's figure minus the other system's on the same lines, "
            "with the middle 95% of the resampled differences. WER is better lower, BLEU higher (0..1). An interval "
            "that includes 0 means the set cannot tell the two apart. Computed from each run's `predictions.jsonl`; "
            "the sweep logged the same numbers on its parent run (`ci_<set>_<figure>_vs_<other>_delta/_low/_high`)."
        ),
    ]
    if rows:
        blocks.append(Table(INTERVAL_HEADERS, rows))
    if missing:
        blocks.append(Text("Not compared: " + " ".join(missing)))
    return blocks
