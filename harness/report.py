"""`harness report <sweep>`: the decision "fine-tune with these settings", with the evidence behind it.

The console gets the short version (best trial against the baseline, every trial in a table).
`write_report` also writes `mlruns/reports/<sweep>/`: `report.md`, a self-contained `report.html`
(plots embedded), `best.yaml` (the best trial's full NeMo config and the command that re-runs
it) and the plots, and logs them on the sweep's MLflow parent run under `report/`. The content is
built once as a list of blocks and rendered twice, so Markdown and HTML never disagree.
"""

from __future__ import annotations

import base64
import html
import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import optuna
from mlflow.exceptions import MlflowException
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.table import Table as RichTable

from harness import plots, provenance
from harness.definition import check_study
from harness.errors import HarnessError
from harness.metrics import is_better, objective_value
from harness.records import PARENT_ATTR
from harness.search_space import format_param, load_search_space
from harness.spec import SweepSpec
from harness.study import best_trial, primary_value, require_study
from harness.sweep import BASELINE_ATTR, TEST_ATTR
from harness.tracking import Tracker, run_name
from harness.trial import Result
from harness.trial_record import TrialRecord

REPORTS_DIR = "reports"
ARTIFACT_PATH = "report"
BEST_CONFIG = "best.yaml"
CONFIG_FILE = "config.yaml"


# -- what the sweep found --------------------------------------------------------------------


@dataclass
class SweepSummary:
    """What a finished (or running) sweep has found so far."""

    study: optuna.Study
    trials: list[FrozenTrial]
    best: FrozenTrial | None
    baseline: dict | None

    @property
    def direction(self) -> str:
        """The study's (first) direction: the study, not the spec, decides what "best" meant."""
        return self.study.directions[0].name.lower()

    @property
    def multi_objective(self) -> bool:
        return len(self.study.directions) > 1


def summarize(spec: SweepSpec) -> SweepSummary:
    """Load the sweep's study read-only. A sweep that never ran is an error that creates nothing; a
    spec that no longer defines the study (objective, search space) is one too, not a mislabelled report."""
    study = require_study(spec)
    space = load_search_space(spec.search_space) if Path(spec.search_space).is_file() else None
    check_study(spec, study, space, adopt=False)
    trials = study.get_trials(deepcopy=False)
    return SweepSummary(study, trials, best_trial(study), study.user_attrs.get(BASELINE_ATTR))


def ordered_trials(trials: list[FrozenTrial], study: optuna.Study) -> list[FrozenTrial]:
    """Best objective first, then trials without a value in number order."""
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else -1

    def key(t: FrozenTrial) -> tuple:
        value = primary_value(t)
        return (value is None, sign * value if value is not None else 0, t.number)

    return sorted(trials, key=key)


def trial_note(trial: FrozenTrial) -> str:
    """Why a trial did not complete (failure reason, or the step it was pruned at), and whose retry it is."""
    notes, record = [], TrialRecord.of(trial)
    if record.fail_reason:
        notes.append(record.fail_reason)
    elif record.pruned_at is not None:
        notes.append(f"pruned at step {record.pruned_at}")
    if record.retry_of is not None:
        notes.append(f"retry of {run_name(record.retry_of)}")
    return "; ".join(notes)


FINAL_COLUMNS = ("val_wer", "val_wer_normalized", "val_bleu")


def trial_rows(summary: SweepSummary) -> tuple[list[str], list[list[str]]]:
    """All trials as table rows, best first, shared by the console table and the written report."""
    names = sorted({p for t in summary.trials for p in t.params})
    headers = ["trial", "state", "objective", *names, *FINAL_COLUMNS, "steps", "seed", "note"]
    rows = []
    for t in ordered_trials(summary.trials, summary.study):
        record = TrialRecord.of(t)
        final = record.final
        rows.append(
            [
                run_name(t.number),
                t.state.name,
                _num(primary_value(t)),
                *[format_param(t.params.get(n, "")) for n in names],
                *[_num(final.get(column)) for column in FINAL_COLUMNS],
                str(trial_steps(t) or ""),
                "" if record.seed is None else str(record.seed),
                trial_note(t),
            ]
        )
    return headers, rows


def trial_steps(trial: FrozenTrial) -> int:
    """Optimizer steps a trial trained: recorded `steps`, else the step it was pruned at."""
    record = TrialRecord.of(trial)
    return record.steps or record.pruned_at or 0


@dataclass
class PruningSavings:
    """Compute pruning saved: steps trained against steps the same trials would have run unpruned."""

    trained: int
    unpruned: int
    trials: int

    @property
    def percent(self) -> float:
        return 100.0 * (1 - self.trained / self.unpruned) if self.unpruned else 0.0


def pruning_savings(trials: list[FrozenTrial], max_steps: int) -> PruningSavings:
    """Over complete and pruned trials; failed ones are left out (a crash is not a saving)."""
    counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    return PruningSavings(sum(trial_steps(t) for t in counted), len(counted) * max_steps, len(counted))


# -- console ------------------------------------------------------------------------------------


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
        console.print(f"Zero-shot baseline: {_metrics(summary.baseline)}")
    if summary.best is None:
        console.print("[yellow]No trial has completed yet.[/]")
    else:
        best = summary.best
        console.print(
            f"[bold]Best trial: {run_name(best.number)}[/] objective={primary_value(best):.4f} "
            f"({spec.objective.metric}, {summary.direction})"
        )
        console.print("  params: " + ", ".join(f"{k}={format_param(v)}" for k, v in best.params.items()))
        console.print(f"  metrics: {_metrics(TrialRecord.of(best).final)}")
    console.print(trials_table(summary))
    console.print(f"Compare the runs in the MLflow UI: [bold]{mlflow_ui_command(spec)}[/]")
    return summary


# -- the written report: blocks --------------------------------------------------------------


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Text:
    """A paragraph; `backticks` become code in both renderings."""

    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Code:
    text: str
    lang: str = ""


@dataclass
class Image:
    plot: plots.Plot


Block = Heading | Text | Table | Code | Image


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
    summary = summarize(spec)
    out = report_dir(spec)
    out.mkdir(parents=True, exist_ok=True)
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


def _curve_metric(spec: SweepSpec) -> str:
    """The validation figure the decision rests on (WER for the combined objectives)."""
    metric = spec.objective.metric
    return f"val_{metric}" if metric in ("wer", "wer_normalized", "bleu") else "val_wer"


def make_plots(spec: SweepSpec, summary: SweepSummary, out: Path) -> list[plots.Plot]:
    """Every figure of the report; the Pareto front only for a multi-objective study."""
    trials = summary.trials
    top = [t for t in ordered_trials(trials, summary.study) if t.state == TrialState.COMPLETE][: plots.TOP_CURVES]
    curves = {}
    for t in top:
        result = Result.read(spec.trials_dir / run_name(t.number))
        if result is not None:
            curves[run_name(t.number)] = result.history
    figures = [
        plots.objective_history(trials, summary.direction, out),
        plots.param_importance(summary.study, out),
        plots.objective_vs_params(trials, _distributions(spec, trials), out),
        plots.learning_curves(curves, out, metric=_curve_metric(spec)),
    ]
    if summary.multi_objective:
        figures.append(plots.pareto_front(summary.study, out))
    return figures


def write_best_config(spec: SweepSpec, summary: SweepSummary, out: Path) -> Path | None:
    """best.yaml: the best trial's complete resolved NeMo config, headed by the command that re-runs it."""
    best = summary.best
    target = out / BEST_CONFIG
    source = spec.trials_dir / run_name(best.number) / CONFIG_FILE if best else None
    if source is None or not source.is_file():
        target.unlink(missing_ok=True)
        return None
    params = " ".join(f"{k}={format_param(v)}" for k, v in best.params.items())
    header = (
        f"# Resolved NeMo config of {run_name(best.number)}, the best trial of sweep `{spec.name}`\n"
        f"# ({objective_text(spec, best)}; params: {params}).\n"
        f"# Re-run it: {reproduce_command(spec, best.number)}\n"
    )
    target.write_text(header + source.read_text())
    return target


def objective_text(spec: SweepSpec, trial: FrozenTrial) -> str:
    """`objective wer = 0.1234`; every objective's value for a multi-objective (`pareto`) sweep."""
    values = " / ".join(_num(v) for v in trial.values or [])
    return f"objective {spec.objective.metric} = {values}"


def reproduce_command(spec: SweepSpec, number: int) -> str:
    return f"harness reproduce {spec.name} --trial {number}"


def export_command(spec: SweepSpec, number: int) -> str:
    return f"harness export {spec.name} --trial {number} --out {spec.name}-{run_name(number)}.nemo"


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
    except (HarnessError, MlflowException, OSError) as exc:  # HarnessError: the store is unreachable
        files.warnings.append(f"could not log the report to MLflow at {spec.tracking_uri}: {exc}")
        return
    files.logged_to = parent


# -- the written report: content ---------------------------------------------------------------


def build_blocks(
    spec: SweepSpec, summary: SweepSummary, figures: list[plots.Plot], best_config: Path | None
) -> list[Block]:
    """The report, top to bottom: decision first, then the evidence, then how to trust and repeat it."""
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    blocks: list[Block] = [
        Heading(f"Sweep report: {spec.name}", 1),
        Text(
            f"Model `{spec.model}`, objective `{spec.objective.metric}` ({summary.direction}), "
            f"{len(summary.trials)} trials; generated {generated}."
        ),
    ]
    blocks += _decision(spec, summary, best_config)
    blocks += _against_baseline(summary)
    blocks += _test_set(spec, summary)
    headers, rows = trial_rows(summary)
    blocks += [
        Heading("All trials"),
        Text("Sorted by objective, best first; pruned and failed trials say why."),
        Table(headers, rows),
    ]
    blocks += _savings(spec, summary)
    blocks.append(Heading("Plots"))
    for figure in figures:
        blocks.append(Image(figure) if figure.path else Text(f"{figure.title}: skipped ({figure.note})."))
    blocks += _spec_sections(spec)
    blocks += _provenance(spec, summary)
    return blocks


def _decision(spec: SweepSpec, summary: SweepSummary, best_config: Path | None) -> list[Block]:
    best = summary.best
    if best is None:
        return [Heading("Decision"), Text("No trial has completed yet: there is nothing to recommend.")]
    verdict = baseline_verdict(spec, summary)
    lead = (
        f"The best trial is {run_name(best.number)} ({objective_text(spec, best)}). {verdict}"
        if verdict
        else f"Fine-tune `{spec.model}` with the settings of {run_name(best.number)} ({objective_text(spec, best)})."
    )
    blocks: list[Block] = [
        Heading("Decision"),
        Text(lead),
        Text(f"The decision was made on {spec.objective.meaning}, at each trial's final validation."),
        Table(["param", "value"], [[k, format_param(v)] for k, v in best.params.items()]),
        Text("Re-run it, or take its fine-tuned checkpoint:"),
        Code(f"{reproduce_command(spec, best.number)}\n{export_command(spec, best.number)}", "bash"),
    ]
    if best_config is not None:
        blocks.append(Text(f"`{best_config.name}` next to this report holds its complete resolved NeMo config."))
    return blocks


def baseline_verdict(spec: SweepSpec, summary: SweepSummary) -> str:
    """A warning when fine-tuning did not beat the zero-shot model: then the pretrained model is the answer."""
    best, baseline = summary.best, summary.baseline
    if best is None or not baseline:
        return ""
    try:
        before = objective_value(baseline, spec.objective)
    except (ValueError, KeyError):
        return ""
    after = primary_value(best)
    if after is None or is_better(after, before, summary.direction):
        return ""
    return (
        f"Warning: the best trial does not beat the zero-shot baseline (objective {_num(after)} against "
        f"{_num(before)}): keep the pretrained model, or raise `budget.max_steps` / widen the search space."
    )


def _against_baseline(summary: SweepSummary) -> list[Block]:
    """WER and BLEU, overall and per language pair: best trial (final validation) against zero-shot."""
    baseline = summary.baseline or {}
    final = TrialRecord.of(summary.best).final if summary.best else {}
    names = _metric_names([*baseline, *final])
    if not names:
        return [Heading("Best trial against the zero-shot baseline"), Text("No validation metrics recorded yet.")]
    rows = []
    for name in names:
        before, after = baseline.get(name), final.get(name)
        change = _signed(after - before) if before is not None and after is not None else ""
        rows.append([name, _num(before), _num(after), change, "lower" if "wer" in name else "higher"])
    return [
        Heading("Best trial against the zero-shot baseline"),
        Text(
            "Validation set; WER and BLEU are 0..1 fractions. Per-pair rows are `source-target` language pairs. "
            "`wer` compares the text as written; `wer_normalized` lower-cases both sides, strips punctuation and "
            "applies Whisper's English normaliser to English; `bleu` is sacreBLEU corpus BLEU (13a). Overall rows "
            "are corpus figures over all pairs of their kind."
        ),
        Table(["metric", "baseline", "best trial", "change", "better is"], rows),
    ]


def _test_set(spec: SweepSpec, summary: SweepSummary) -> list[Block]:
    test = summary.study.user_attrs.get(TEST_ATTR)
    blocks: list[Block] = [Heading("Test set")]
    if not test:
        why = "no `data.test` manifest in the spec" if spec.data.test is None else "the best trial was not scored yet"
        return [*blocks, Text(f"Not available: {why}.")]
    metrics = test.get("metrics", {})
    rows = [[name, _num(metrics[name])] for name in _metric_names(metrics, prefix="test_")]
    return [*blocks, Text(f"{run_name(test['trial'])} on `{spec.data.test}`:"), Table(["metric", "value"], rows)]


def _savings(spec: SweepSpec, summary: SweepSummary) -> list[Block]:
    s = pruning_savings(summary.trials, spec.budget.max_steps)
    text = (
        f"{s.trials} complete or pruned trials trained {s.trained} steps; without pruning they would have "
        f"trained {s.unpruned} ({s.trials} x budget.max_steps {spec.budget.max_steps}): pruning saved "
        f"{s.percent:.1f}% of the training steps (pruner `{spec.pruner.type}`; failed trials not counted)."
    )
    return [Heading("Compute saved by pruning"), Text(text)]


def _spec_sections(spec: SweepSpec) -> list[Block]:
    blocks: list[Block] = [Heading("Sweep spec")]
    source = Path(spec.source)
    blocks.append(Code(source.read_text(), "yaml") if source.is_file() else Text(f"`{spec.source}` is gone."))
    blocks.append(Heading("Search space"))
    space = Path(spec.search_space)
    if not space.is_file():
        return [*blocks, Text(f"`{spec.search_space}` is gone.")]
    rows = [[name, _describe(dist)] for name, dist in load_search_space(space).items()]
    return [
        *blocks,
        Text(f"`{spec.search_space}`:"),
        Table(["param", "distribution"], rows),
        Code(space.read_text(), "yaml"),
    ]


def _provenance(spec: SweepSpec, summary: SweepSummary) -> list[Block]:
    records = {t.number: TrialRecord.of(t) for t in summary.trials}
    seeds = {number: r.seed for number, r in records.items() if r.seed is not None}
    p = provenance.collect(spec, seeds)
    dirty = {True: "yes (uncommitted changes)", False: "no", None: "unknown"}[p.git_dirty]
    hosts = sorted({r.host for r in records.values() if r.host is not None})
    files = [p.checkpoint, *p.manifests]
    return [
        Heading("Provenance"),
        Table(["package", "version"], [[k, v] for k, v in p.versions.items()]),
        Table(
            ["item", "value"],
            [
                ["harness git commit", p.git_commit or "unknown (not a git checkout)"],
                ["working tree dirty", dirty],
                ["hardware (where this report was made)", p.hardware],
                ["trial hosts", ", ".join(hosts) or "unknown"],
                ["sampler", f"{spec.sampler.type}, seed {p.sampler_seed} (each worker derives its own from it)"],
                ["training seed base", str(p.training_seed)],
            ],
        ),
        Table(
            ["file", "path", "lines", "hours", "sha256", "note"],
            [
                [
                    f.role,
                    f.path,
                    "" if f.lines is None else str(f.lines),
                    "" if f.hours is None else f"{f.hours:.4f}",
                    f.sha256 or "",
                    f.note,
                ]
                for f in files
            ],
        ),
        Table(["trial", "seed"], [[run_name(n), str(s)] for n, s in p.trial_seeds.items()]),
    ]


# -- the written report: rendering -------------------------------------------------------------


def to_markdown(blocks: list[Block], directory: Path) -> str:
    """Markdown with plots linked as files next to it (`plots/*.png`)."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Text):
            parts.append(block.text)
        elif isinstance(block, Table):
            lines = [_md_row(block.headers), _md_row(["---"] * len(block.headers))]
            lines += [_md_row(row) for row in block.rows]
            parts.append("\n".join(lines))
        elif isinstance(block, Code):
            parts.append(f"```{block.lang}\n{block.text.rstrip()}\n```")
        elif isinstance(block, Image):
            parts.append(f"![{block.plot.title}]({block.plot.path.relative_to(directory).as_posix()})")
    return "\n\n".join(parts) + "\n"


def to_html(blocks: list[Block], *, title: str) -> str:
    """One HTML file with nothing external: plots are base64 PNG data URIs, the style is inline."""
    body = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Text):
            body.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.headers)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, Code):
            body.append(f"<pre><code>{html.escape(block.text.rstrip())}</code></pre>")
        elif isinstance(block, Image):
            data = base64.b64encode(block.plot.path.read_bytes()).decode("ascii")
            width, height = block.plot.size
            body.append(
                f'<figure><img alt="{html.escape(block.plot.title)}" width="{width}" height="{height}" '
                f'src="data:image/png;base64,{data}"><figcaption>{html.escape(block.plot.title)}'
                "</figcaption></figure>"
            )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1300px;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0 1em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}"
    "th{background:#f0f0f0}pre{background:#f6f6f6;padding:0.8em;overflow-x:auto}"
    "code{font-family:ui-monospace,monospace}figure{margin:1em 0}img{max-width:100%;height:auto}"
)


def _inline(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _metric_names(names: list[str], prefix: str = "val_") -> list[str]:
    """WER then BLEU, each overall before its per-pair values (`val_wer/en-en`)."""
    wanted = {n for n in names if n.startswith((f"{prefix}wer", f"{prefix}bleu"))}
    return sorted(wanted, key=lambda n: ("bleu" in n, "/" in n, n))


def _distributions(spec: SweepSpec, trials: list[FrozenTrial]) -> dict:
    """The search space as the trials sampled it (falls back to the YAML when no trial has run)."""
    dists: dict = {}
    for t in trials:
        dists.update(t.distributions)
    if not dists and Path(spec.search_space).is_file():
        dists = load_search_space(spec.search_space)
    return dict(sorted(dists.items()))


def _describe(dist) -> str:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return "one of " + ", ".join(format_param(c) for c in dist.choices)
    scale = ", log scale" if getattr(dist, "log", False) else ""
    step = f", step {format_param(dist.step)}" if getattr(dist, "step", None) else ""
    return f"{format_param(dist.low)} .. {format_param(dist.high)}{scale}{step}"


def _num(value) -> str:
    return "" if value is None else f"{value:.4f}"


def _signed(value: float) -> str:
    return f"{value:+.4f}"


def _metrics(metrics: dict) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "step")
