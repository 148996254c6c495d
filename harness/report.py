"""`harness report <sweep>`: the best trial against the baseline, and every trial in a table."""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.table import Table

from harness.errors import HarnessError
from harness.search_space import format_param
from harness.spec import SweepSpec
from harness.study import open_storage
from harness.tracking import run_name


@dataclass
class SweepSummary:
    """What a finished (or running) sweep has found so far."""

    study: optuna.Study
    trials: list[FrozenTrial]
    best: FrozenTrial | None
    baseline: dict | None


def summarize(spec: SweepSpec) -> SweepSummary:
    """Load the sweep's study read-only; a sweep that never ran is a clear error."""
    try:
        study = optuna.load_study(study_name=spec.name, storage=open_storage(spec.storage_url))
    except KeyError:
        raise HarnessError(f"No sweep named {spec.name!r} in {spec.storage_url}; run `harness sweep {spec.name}` first.") from None
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    return SweepSummary(study, trials, best, study.user_attrs.get("baseline"))


def mlflow_ui_command(spec: SweepSpec) -> str:
    uri = spec.tracking_uri
    if uri.startswith("sqlite:"):
        return f"mlflow ui --backend-store-uri {uri}"
    return f"open {uri} (experiment {spec.experiment_name})"


def trials_table(summary: SweepSummary, direction: str) -> Table:
    """All trials, best objective first; failures and pruned trials keep their reason."""
    names = sorted({p for t in summary.trials for p in t.params})
    table = Table(title="Trials")
    for column in ["trial", "state", "objective", *names, "val_wer", "val_bleu", "note"]:
        table.add_column(column)
    sign = 1 if direction == "minimize" else -1

    def order(t: FrozenTrial):
        return (t.value is None, sign * t.value if t.value is not None else 0, t.number)

    for t in sorted(summary.trials, key=order):
        final = t.user_attrs.get("final", {})
        note = t.user_attrs.get("fail_reason") or (f"pruned at step {t.user_attrs['pruned_at']}" if "pruned_at" in t.user_attrs else "")
        table.add_row(
            run_name(t.number), t.state.name, _num(t.value), *[format_param(t.params.get(n, "")) for n in names],
            _num(final.get("val_wer")), _num(final.get("val_bleu")), note,
        )
    return table


def print_report(spec: SweepSpec, console: Console) -> SweepSummary:
    summary = summarize(spec)
    if summary.baseline:
        console.print(f"Zero-shot baseline: {_metrics(summary.baseline)}")
    if summary.best is None:
        console.print("[yellow]No trial has completed yet.[/]")
    else:
        best = summary.best
        console.print(f"[bold]Best trial: {run_name(best.number)}[/] objective={best.value:.4f} "
                      f"({spec.objective.metric}, {spec.direction})")
        console.print("  params: " + ", ".join(f"{k}={format_param(v)}" for k, v in best.params.items()))
        console.print(f"  metrics: {_metrics(best.user_attrs.get('final', {}))}")
    console.print(trials_table(summary, spec.direction))
    console.print(f"Compare the runs in the MLflow UI: [bold]{mlflow_ui_command(spec)}[/]")
    return summary


def _num(value) -> str:
    return "" if value is None else f"{value:.4f}"


def _metrics(metrics: dict) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "step")
