"""`harness status` on the console: the sweep in a dozen lines, once or refreshed until Ctrl-C (`--watch`)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from harness.names import run_name
from harness.number_text import params_text, value_text
from harness.status._jobs import SLURM, LaunchJob, TaskState
from harness.status._snapshot import KINDS, SweepStatus
from harness.study import primary_value


def status_view(status: SweepStatus, *, where: str) -> RenderableType:
    """The whole view: counts, confirmation runs, best, budget and ETA, running trials, launch jobs."""
    parts: list[RenderableType] = [
        Text(f"{status.name} ({where}), {status.taken:%Y-%m-%d %H:%M:%S}", style="bold"),
        Text(f"trials: {_counts_text(status.search)}{_search_notes(status)}"),
    ]
    if status.confirm_runs or status.confirmation:
        planned = f" of {status.confirm_runs} planned" if status.confirm_runs else ""
        decided = "; decided" if status.decided else ""
        parts.append(Text(f"confirmation runs{planned}: {_counts_text(status.confirmation)}{decided}"))
    parts.append(Text(f"best so far: {_best_text(status)}"))
    parts.append(Text(f"budget: {_budget_text(status)}"))
    if status.running:
        parts.append(_running_table(status))
    parts += _jobs_lines(status.jobs, status.job_states)
    return Group(*parts)


def print_status(console: Console, read: Callable[[], SweepStatus], *, where: str) -> None:
    console.print(status_view(read(), where=where), highlight=False)


def watch_status(console: Console, read: Callable[[], SweepStatus], *, where: str, seconds: float) -> None:
    """Redraw every `seconds` until Ctrl-C (a KeyboardInterrupt for the caller): in place on a terminal, else the
    whole view again (logs)."""
    if not console.is_terminal:
        while True:
            print_status(console, read, where=where)
            console.print(f"[dim](next refresh in {seconds:g} s; Ctrl-C stops)[/]")
            time.sleep(seconds)
    with Live(status_view(read(), where=where), console=console, auto_refresh=False) as live:
        while True:
            time.sleep(seconds)
            live.update(status_view(read(), where=where), refresh=True)


def _counts_text(counts: Counter[str]) -> str:
    return ", ".join(f"{counts[k]} {k}" for k in KINDS if counts[k]) or "none yet"


def _search_notes(status: SweepStatus) -> str:
    notes = []
    if status.infeasible:
        notes.append(f"{status.infeasible} complete but infeasible: forgets too much")
    if status.requeued:
        notes.append(f"{status.requeued} failed re-queued: not counted in the budget")
    return f" ({'; '.join(notes)})" if notes else ""


def _best_text(status: SweepStatus) -> str:
    best = status.best
    if best is None:
        return f"none ({status.no_best})"
    value = best.values if best.values and len(best.values) > 1 else primary_value(best)
    return f"{run_name(best.number)} {status.figure_name}={value_text(value)}  {params_text(best.params)}"


def _budget_text(status: SweepStatus) -> str:
    eta = status.eta
    used = f"{status.used}/{status.budget} search trials used, {max(0, status.budget - status.used)} left"
    if eta.seconds is None:
        return f"{used}; ETA unknown: {eta.why}"
    if eta.left == 0 and eta.at_once == 0:
        return f"{used}; finished"
    pace = f"a trial takes {clock(eta.per_trial)}" if eta.per_trial is not None else ""
    return f"{used}; ETA {clock(eta.seconds)} ({pace}, {eta.at_once} at once, {eta.left} still to start)"


def _running_table(status: SweepStatus) -> Table:
    table = Table(show_edge=False, pad_edge=False, box=None)
    for column in ("running", "step", status.figure_name, "worker", "for"):
        table.add_column(column)
    for trial in status.running:
        name = run_name(trial.number) + (" (confirmation)" if trial.confirmation else "")
        step = f"{trial.step}/{status.max_steps}" if trial.step is not None else f"-/{status.max_steps}"
        figure = value_text(trial.figure) if trial.figure is not None else "no validation yet"
        if not status.reported:
            figure = "not reported (Pareto: no pruning)"
        table.add_row(name, step, figure, trial.worker or "?", clock(trial.seconds))
    return table


def _jobs_lines(jobs: list[LaunchJob], states: dict[str, list[TaskState]] | str) -> list[RenderableType]:
    if not jobs:
        return []
    lines: list[RenderableType] = [Text("launch jobs:")]
    for job in jobs:
        said = [f"{job.tasks} task(s)"] + [
            f"{k} {v}" for k, v in (("submitted", job.submitted), ("logs", job.log_dir)) if v
        ]
        lines.append(Text(f"  {job.executor} {job.job_id}: {', '.join(said)}"))
        if isinstance(states, dict) and job.job_id in states:
            lines.append(Text("    " + ", ".join(task.text() for task in states[job.job_id])))
    if isinstance(states, str):
        lines.append(Text(f"  ({states})", style="dim"))
    if any(job.executor != SLURM for job in jobs):
        lines.append(Text("  (local jobs run on the machine that launched them; their state is there)", style="dim"))
    return lines


def clock(seconds: float | None) -> str:
    """`3h12m`, `12m03s`, `45s`."""
    if seconds is None:
        return "?"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
