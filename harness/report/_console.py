"""The console view of a sweep: best trial against the baseline, every trial in a rich table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table as RichTable

from harness.names import metrics_text, run_name
from harness.report._summary import SweepSummary, summarize, trial_rows
from harness.search_space import format_param
from harness.spec import SweepSpec
from harness.study import primary_value
from harness.trial_record import TrialRecord


def mlflow_ui_command(spec: SweepSpec) -> str:
    uri = spec.tracking_uri
    if uri.startswith("sqlite:"):
        return f"mlflow ui --backend-store-uri {uri}"
    return f"open {uri} (experiment {spec.experiment_name})"


def trials_table(summary: SweepSummary) -> RichTable:
    """All trials, best objective first; failures and pruned trials keep their reason."""
    table = RichTable(title="Trials")
    headers, rows = trial_rows(summary)
    for column in headers:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    return table


def print_report(spec: SweepSpec, console: Console) -> SweepSummary:
    summary = summarize(spec)
    if summary.baseline:
        console.print(f"Zero-shot baseline: {metrics_text(summary.baseline)}")
    if summary.best is None:
        console.print("[yellow]No trial has completed yet.[/]")
    else:
        best = summary.best
        console.print(
            f"[bold]Best trial: {run_name(best.number)}[/] objective={primary_value(best):.4f} "
            f"({spec.objective.metric}, {summary.direction})"
        )
        console.print("  params: " + ", ".join(f"{k}={format_param(v)}" for k, v in best.params.items()))
        console.print(f"  metrics: {metrics_text(TrialRecord.of(best).final)}")
    console.print(trials_table(summary))
    console.print(f"Compare the runs in the MLflow UI: [bold]{mlflow_ui_command(spec)}[/]")
    return summary
