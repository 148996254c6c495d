"""What a running sweep shows: a live rich view on a terminal, plain log lines otherwise.

The view reads only what the supervisor already knows (study counts, finished outcomes) and each
running trial's `progress.json` (written by the trial process after every validation), so it
costs nothing on the training path.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

PROGRESS_FILE = "progress.json"


def read_progress(trial_dir: Path) -> dict:
    """The trial process's last report: {"step": int, "max_steps": int, "metrics": {...}}."""
    try:
        return json.loads((trial_dir / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def write_progress(trial_dir: Path, step: int, max_steps: int, metrics: dict) -> None:
    tmp = trial_dir / (PROGRESS_FILE + ".tmp")
    tmp.write_text(json.dumps({"step": step, "max_steps": max_steps, "metrics": metrics}))
    tmp.replace(trial_dir / PROGRESS_FILE)


class SweepView:
    """Live table of the sweep (terminal) or one line per event (logs, CI)."""

    def __init__(self, console: Console, *, name: str, budget: int) -> None:
        self.console = console
        self.name = name
        self.budget = budget
        self.started = time.monotonic()
        self.durations: list[float] = []
        self.live = Live(console=console, refresh_per_second=1, transient=False) if console.is_terminal else None

    def __enter__(self) -> SweepView:
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live:
            self.live.__exit__(*exc)

    def log(self, message: str) -> None:
        self.console.print(message, highlight=False)

    def trial_finished(self, seconds: float) -> None:
        self.durations.append(seconds)

    def eta_seconds(self, done: int, slots: int) -> float | None:
        if not self.durations:
            return None
        mean = sum(self.durations) / len(self.durations)
        return max(0, self.budget - done) * mean / max(1, slots)

    def refresh(self, counts: dict[str, int], best: str, running: list[tuple[str, Path]], slots: int) -> None:
        """Redraw the live view; without a terminal the per-event log lines suffice."""
        if not self.live:
            return
        eta = self.eta_seconds(counts.get("done", 0), slots)
        header = Text(
            f"{self.name}: {counts.get('done', 0)}/{self.budget} done, {counts.get('running', 0)} running, "
            f"{counts.get('pruned', 0)} pruned, {counts.get('failed', 0)} failed; best {best}; "
            f"ETA {_clock(eta) if eta is not None else '?'} (elapsed {_clock(time.monotonic() - self.started)})"
        )
        table = Table(show_edge=False)
        for column in ("running trial", "step", "last validation"):
            table.add_column(column)
        for name, trial_dir in running:
            report = read_progress(trial_dir)
            overall = {k: v for k, v in report.get("metrics", {}).items() if "/" not in k}  # per pair: MLflow
            metrics = " ".join(f"{k}={v:.4f}" for k, v in overall.items())
            step = f"{report.get('step', 0)}/{report.get('max_steps', '?')}"
            table.add_row(name, step, metrics)
        self.live.update(Group(header, table))


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"
