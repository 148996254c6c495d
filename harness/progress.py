"""What a running sweep shows: a live rich view on a terminal, plain log lines otherwise.

The view reads only what the supervisor already knows (study counts, finished outcomes) and each
running trial's progress file (`TrialDir.progress`, written by the trial process after every validation), so it
costs nothing on the training path. Without a terminal (Slurm logs, nohup, `| tee`) a redrawn
table is noise, so each validation of each trial becomes one plain line instead.
"""

from __future__ import annotations

import json
import time

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from harness.trial_dir import TrialDir


def read_progress(trial_dir: TrialDir) -> dict:
    """The trial process's last report: {"step": int, "max_steps": int, "metrics": {...}}, and
    "elapsed" (seconds since training started) where the trial measured it."""
    try:
        return json.loads(trial_dir.progress.read_text())
    except (OSError, ValueError):
        return {}


def write_progress(trial_dir: TrialDir, step: int, max_steps: int, metrics: dict, elapsed: float | None = None) -> None:
    """`elapsed` excludes the model's restore, so an ETA from it does not count that time again."""
    report = {"step": step, "max_steps": max_steps, "metrics": metrics}
    if elapsed is not None:
        report["elapsed"] = elapsed
    tmp = trial_dir.progress.with_name(trial_dir.progress.name + ".tmp")
    tmp.write_text(json.dumps(report))
    tmp.replace(trial_dir.progress)


class SweepView:
    """Live table of the sweep (terminal) or one line per event (logs, CI)."""

    def __init__(self, console: Console, *, name: str, budget: int) -> None:
        self.console = console
        self.name = name
        self.budget = budget
        self.started = time.monotonic()
        self.durations: list[float] = []
        self._logged_steps: dict[str, int] = {}  # trial name -> the step of its last validation line
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

    def refresh(self, counts: dict[str, int], best: str, running: list[tuple[str, TrialDir]], slots: int) -> None:
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
            step = f"{report.get('step', 0)}/{report.get('max_steps', '?')}"
            table.add_row(name, step, _overall_text(report))
        self.live.update(Group(header, table))

    def log_validations(self, running: list[tuple[str, TrialDir, float]]) -> None:
        """Without a terminal: `trial-0003 step 200/1000 val_wer=0.4120 ... ETA 4m10s`, once per new
        validation of each running trial (name, trial dir, seconds since its process started).

        The ETA is the trial's own: its remaining steps at the pace of its steps so far, timed by the
        trial from the start of training (or, from an older trial process, since it started)."""
        if self.live:
            return
        for name, trial_dir, seconds in running:
            report = read_progress(trial_dir)
            step = report.get("step") or 0
            if step <= 0 or self._logged_steps.get(name) == step:
                continue
            self._logged_steps[name] = step
            max_steps = report.get("max_steps") or step
            eta = report.get("elapsed", seconds) * max(0, max_steps - step) / step
            line = f"{name} step {step}/{max_steps} {_overall_text(report)} ETA {_clock(eta)}"
            self.console.print(line, highlight=False, markup=False, soft_wrap=True)  # one line, however long


def _overall_text(report: dict) -> str:
    """The validation's overall figures (`val_wer=0.4120 val_bleu=0.3100`); per-pair ones go to MLflow."""
    overall = {k: v for k, v in report.get("metrics", {}).items() if "/" not in k}
    return " ".join(f"{k}={v:.4f}" for k, v in overall.items())


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"
