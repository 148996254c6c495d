"""`harness reproduce`: a recorded trial re-run from its params, seed and thread count (and merged at its recorded
`merge_alpha`, `harness.merging`), shown beside its record."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.devices import default_slots
from harness.names import run_name
from harness.number_text import number_text
from harness.spec import SweepSpec
from harness.sweep._supervisor import Supervisor
from harness.trial_record import TrialRecord


def reproduce_trial(spec: SweepSpec, number: int | None, console: Console) -> tuple[dict, dict]:
    """`harness reproduce`: re-run a trial (default: the best) and print both metric sets side by side; below the
    table, whether the reproduction was exact (the recorded numerics re-created) or could not be."""
    supervisor = Supervisor(spec, console=console, slots=default_slots(1, devices=spec.training.devices))
    reproduction = supervisor.reproduce(number)
    trial, again = reproduction.trial, reproduction.figures
    record = TrialRecord.of(trial)
    original = record.final
    alpha = record.merge_alpha
    merged = "" if alpha is None else f", both merged with the pretrained model at alpha {alpha:g}"
    title = f"{run_name(trial.number)}: recorded vs reproduced{merged}"
    table = Table(title=title, caption=_caption(reproduction.differs))
    for column in ("metric", "recorded", "reproduced", "difference"):
        table.add_column(column)
    for key in sorted(set(original) | set(again)):
        a, b = original.get(key), again.get(key)
        diff = f"{b - a:+.4f}" if a is not None and b is not None else ""
        table.add_row(key, number_text(a), number_text(b), diff)
    console.print(table)
    return original, again


def _caption(differs: list[str]) -> str:
    """Exact reproduction, or why it is impossible here (the differences are then one more seed's spread)."""
    if not differs:
        return "Exact reproduction: same seed, threads, device, precision and versions; any difference is a bug."
    return (
        f"Exact reproduction impossible ({escape('; '.join(differs))}): the differences are the spread of one more "
        "seed, not an error."
    )
