"""`write_report`: the report's files on disk (page, plots, best.yaml) and the same files on MLflow.

`mlruns/reports/<sweep>/` holds `report.md`, a self-contained `report.html`, `best.yaml` (the best
trial's full NeMo config and the command that re-runs it) and `plots/`; they are logged on the
sweep's MLflow parent run under `report/`.
"""

from __future__ import annotations

import itertools
import shutil
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.exceptions import MlflowException
from optuna.trial import FrozenTrial, TrialState

from harness import plots
from harness.errors import StoreError
from harness.names import PARENT_ATTR, run_name
from harness.number_text import params_text
from harness.report._confirmation import decision_text
from harness.report._document import build_blocks, objective_text, reproduce_command
from harness.report._front import front_plot, merge_text, shows_front
from harness.report._render import to_html, to_markdown
from harness.report._retention import retention_points, shows_retention
from harness.report._summary import SweepSummary, ordered_trials, summarize
from harness.search_space import load_search_space
from harness.spec import SweepSpec
from harness.stores import creation_lock
from harness.tracking import Tracker
from harness.trial import Result
from harness.trial_dir import TrialDir
from harness.trial_record import TrialRecord, model_params

REPORTS_DIR = "reports"
ARTIFACT_PATH = "report"
BEST_CONFIG = "best.yaml"


@dataclass
class ReportFiles:
    """Where `write_report` put things, and the MLflow run it logged them on (None if it could not)."""

    directory: Path
    markdown: Path
    html: Path | None
    best_config: Path | None
    plots: list[plots.Plot] = field(default_factory=list)
    logged_to: str | None = None
    warnings: list[str] = field(default_factory=list)


def report_dir(spec: SweepSpec) -> Path:
    return spec.state_dir / REPORTS_DIR / spec.name


def write_report(spec: SweepSpec, *, html_report: bool = True) -> ReportFiles:
    """Write report.md (and report.html), best.yaml and the plots; log them on the sweep's parent run."""
    out = report_dir(spec)
    out.mkdir(parents=True, exist_ok=True)
    # Workers that end together each write the report: one at a time, or one deletes the other's plots.
    with creation_lock(out / "report"):
        return _write_files(spec, out, html_report=html_report)


def _write_files(spec: SweepSpec, out: Path, *, html_report: bool) -> ReportFiles:
    summary = summarize(spec)
    shutil.rmtree(out / "plots", ignore_errors=True)  # a figure skipped this time must not linger from the last
    figures = make_plots(spec, summary, out / "plots")
    best_config = write_best_config(spec, summary, out)
    blocks = build_blocks(spec, summary, figures, best_config)
    files = ReportFiles(out, out / "report.md", None, best_config, figures)
    files.markdown.write_text(to_markdown(blocks, out))
    if html_report:
        files.html = out / "report.html"
        files.html.write_text(to_html(blocks, title=f"Sweep report: {spec.name}"))
    else:
        (out / "report.html").unlink(missing_ok=True)  # a stale HTML would contradict the new Markdown
    log_report(spec, summary, files)
    return files


# -- plots ---------------------------------------------------------------------------------------


def make_plots(spec: SweepSpec, summary: SweepSummary, out: Path) -> list[plots.Plot]:
    """Every figure of the report; the Pareto front only for a multi-objective study, the front of every judged
    merge only where trials judged merges or the retention WER is an objective."""
    trials = summary.trials
    figures = [
        plots.objective_history(trials, summary.direction, out),
        plots.param_importance(summary.study, out),
        plots.objective_vs_params(trials, _distributions(spec, trials), out),
        plots.learning_curves(_curves(spec, summary), out, metric=_curve_metric(spec)),
    ]
    if summary.multi_objective and not spec.objective.pareto_retention:  # that front is `front_plot`'s, with merges
        figures.append(plots.pareto_front(summary.study, out))
    if shows_retention(summary):
        figures.append(plots.retention_tradeoff(retention_points(summary), summary.direction, out))
    if shows_front(spec, summary):
        figures.append(front_plot(spec, summary, out))
    return figures


def _curves(spec: SweepSpec, summary: SweepSummary) -> list[plots.Curve]:
    """The top complete trials and the best-ranked pruned ones (an out-of-memory trial was not pruned), from
    the histories their processes wrote; a trial run on another host has none here and is passed over."""
    ranked = ordered_trials(summary.trials, summary.study)
    complete = [t for t in ranked if t.state == TrialState.COMPLETE]
    pruned = [t for t in ranked if t.state == TrialState.PRUNED and not TrialRecord.of(t).out_of_memory]
    return [*_read_curves(spec, complete, plots.TOP_CURVES), *_read_curves(spec, pruned, plots.PRUNED_CURVES)]


def _read_curves(spec: SweepSpec, trials: list[FrozenTrial], limit: int) -> list[plots.Curve]:
    results = ((t, Result.read(TrialDir.of(spec, t.number))) for t in trials)
    curves = (
        plots.Curve(run_name(t.number), result.history, pruned=t.state == TrialState.PRUNED)
        for t, result in results
        if result is not None and result.history
    )
    return list(itertools.islice(curves, limit))


def _curve_metric(spec: SweepSpec) -> str:
    """The validation figure the decision rests on (WER for the combined objectives)."""
    metric = spec.objective.metric
    return f"val_{metric}" if metric in ("wer", "wer_normalized", "bleu") else "val_wer"


def _distributions(spec: SweepSpec, trials: list[FrozenTrial]) -> dict:
    """The search space as the trials sampled it (falls back to the YAML when no trial has run)."""
    dists: dict = {}
    for t in trials:
        dists.update(t.distributions)
    if not dists and Path(spec.search_space).is_file():
        dists = load_search_space(spec.search_space)
    return dict(sorted(dists.items()))


# -- best.yaml -----------------------------------------------------------------------------------


def write_best_config(spec: SweepSpec, summary: SweepSummary, out: Path) -> Path | None:
    """best.yaml: the best trial's complete resolved NeMo config, headed by the command that re-runs it."""
    best = summary.best
    target = out / BEST_CONFIG
    source = TrialDir.of(spec, best.number).config if best else None
    if best is None or source is None or not source.is_file():
        target.unlink(missing_ok=True)
        return None
    confirmed = decision_text(spec, summary)
    header = (
        f"# Resolved NeMo config of {run_name(best.number)}, the best trial of sweep `{spec.name}`\n"
        + (f"# {confirmed}\n" if confirmed else "")
        + f"# ({objective_text(spec, best)}; params: {params_text(model_params(best))}).\n"
        + "".join(f"# {line}\n" for line in textwrap.wrap(merge_text(best), 110))
        + f"# Re-run it: {reproduce_command(spec, best.number)}\n"
    )
    target.write_text(header + source.read_text())
    return target


# -- MLflow --------------------------------------------------------------------------------------


def log_report(spec: SweepSpec, summary: SweepSummary, files: ReportFiles) -> None:
    """Attach the report to the sweep's MLflow parent run; an unreachable server costs a warning, not the report."""
    parent = summary.study.user_attrs.get(PARENT_ATTR)
    if not parent:
        files.warnings.append("the study records no MLflow parent run; the report was not logged to MLflow")
        return
    try:
        tracker = Tracker(spec.tracking_uri, spec.experiment_name, artifact_root=spec.state_dir / "artifacts")
        for path in (files.markdown, files.html, files.best_config):
            if path is not None:
                tracker.log_artifact(parent, path, ARTIFACT_PATH)
        for plot in files.plots:
            if plot.path is not None:
                tracker.log_artifact(parent, plot.path, f"{ARTIFACT_PATH}/plots")
    except (StoreError, MlflowException, OSError) as exc:  # StoreError: the store is unreachable
        files.warnings.append(f"could not log the report to MLflow at {spec.tracking_uri}: {exc}")
        return
    files.logged_to = parent
