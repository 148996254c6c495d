"""The console view of a sweep: best trial against the baseline, every trial in a rich table."""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from rich.console import Console
from rich.table import Table as RichTable

from harness.errors import StoreError
from harness.names import run_name
from harness.number_text import metrics_text
from harness.report._behaviours import reading
from harness.report._retention import retention_verdict
from harness.report._summary import MEMORY_HEADERS, SweepSummary, memory_rows, summarize
from harness.report._trials import trial_rows
from harness.search_space import format_param
from harness.spec import SweepSpec
from harness.stores import redact, sqlite_path
from harness.study import no_best_reason, primary_value
from harness.tracking import Tracker, runs_link, runs_view_key
from harness.trial_record import TrialRecord

LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def mlflow_ui_command(spec: SweepSpec) -> str:
    """How to open the sweep's runs table: the server's link, or `mlflow ui` on the store and then the link."""
    uri = spec.tracking_uri
    if uri.startswith(("http://", "https://")):
        return f"open {_runs_link(spec, uri)}"
    return f"mlflow ui --backend-store-uri {redact(uri)}, then open {_runs_link(spec, LOCAL_UI)}"


def _runs_link(spec: SweepSpec, ui_url: str) -> str:
    """The runs table in the model-training layout, with the sweep's saved view where it has one. Where the
    store cannot be read, the experiments list (a report must not fail over a link)."""
    path = sqlite_path(spec.tracking_uri)
    if path is not None and not path.is_file():
        return runs_link(ui_url, None)
    try:
        tracker = Tracker(spec.tracking_uri, spec.experiment_name, create=False)
        view = runs_view_key(spec.name)
        return runs_link(ui_url, tracker.experiment_id, view if tracker.has_runs_view(view) else None)
    except (StoreError, MlflowException, OSError):
        return runs_link(ui_url, None)


def trials_table(summary: SweepSummary) -> RichTable:
    """All trials, best objective first; failures and pruned trials keep their reason."""
    table = RichTable(title="Trials")
    headers, rows = trial_rows(summary)
    for column in headers:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    return table


def memory_table(summary: SweepSummary) -> RichTable | None:
    """Per freeze mode, the largest batch_duration that fit and the smallest that ran out of memory."""
    rows = memory_rows(summary.trials)
    if not rows:
        return None
    table = RichTable(title="Memory: largest batch_duration that fit per freeze mode")
    for column in MEMORY_HEADERS:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    return table


def print_report(spec: SweepSpec, console: Console) -> SweepSummary:
    summary = summarize(spec)
    if summary.baseline:
        console.print(f"Zero-shot baseline: {metrics_text(summary.baseline)}")
    if summary.best is None:
        console.print(f"[yellow]No best trial: {no_best_reason(summary.study)}.[/]")
    else:
        best = summary.best
        console.print(
            f"[bold]Best trial: {run_name(best.number)}[/] objective={primary_value(best):.4f} "
            f"({spec.objective.metric}, {summary.direction})"
        )
        console.print("  params: " + ", ".join(f"{k}={format_param(v)}" for k, v in best.params.items()))
        console.print(f"  metrics: {metrics_text(TrialRecord.of(best).final)}")
        retention = retention_verdict(summary)
        if retention:
            console.print(f"  {retention}")
    for name in sorted(spec.behaviours):  # did the trials learn each custom behaviour?
        console.print("Behaviour " + reading(spec, name, summary.baseline or {}, summary.best_final), markup=False)
    console.print(trials_table(summary))
    memory = memory_table(summary)
    if memory is not None:
        console.print(memory)
    console.print(f"Compare the runs in the MLflow UI: [bold]{mlflow_ui_command(spec)}[/]")
    return summary
