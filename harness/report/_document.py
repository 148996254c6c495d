"""The report's content: a list of blocks, top to bottom, that both renderers turn into a page.

Decision first (which trial, with which settings, and how to re-run it), then the evidence (against
the zero-shot baseline, on the test set, every trial, compute saved, plots), then what it was run on
(the spec, the search space, provenance).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from harness import plots, provenance
from harness.names import TEST_ATTR, run_name
from harness.number_text import number_text
from harness.report._behaviours import behaviour_blocks, behaviour_metrics
from harness.report._blocks import Block, Code, Heading, Image, Table, Text
from harness.report._comparison import COMPARISON_HEADERS, comparison_rows, figure_names
from harness.report._confirmation import confirmation_blocks, decision_text
from harness.report._front import front_blocks, merge_text
from harness.report._intervals import interval_blocks
from harness.report._retention import retention_rows, retention_verdict
from harness.report._summary import MEMORY_HEADERS, SweepSummary, baseline_verdict, memory_rows, pruning_savings
from harness.report._trials import trial_rows
from harness.search_space import MERGE_ALPHA, format_param, load_search_space, merge_alphas
from harness.spec import SweepSpec
from harness.study import no_best_reason
from harness.trial_record import TrialRecord, model_params

# -- the page, section by section ----------------------------------------------------------------


def build_blocks(
    spec: SweepSpec, summary: SweepSummary, figures: list[plots.Plot], best_config: Path | None
) -> list[Block]:
    """The report, top to bottom: decision first, then the evidence, then how to trust and repeat it."""
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    blocks: list[Block] = [
        Heading(f"Sweep report: {spec.name}", 1),
        Text(
            f"Model `{spec.model}`, objective `{spec.objective.metric}` ({summary.direction}), "
            f"{len(summary.trials)} trials; generated {generated}."
        ),
    ]
    blocks += _decision(spec, summary, best_config)
    blocks += confirmation_blocks(spec, summary)
    blocks += _against_baseline(spec, summary)
    blocks += _retention(spec, summary)
    blocks += front_blocks(spec, summary)
    blocks += behaviour_blocks(spec, summary)
    blocks += _test_set(spec, summary)
    blocks += interval_blocks(spec, summary)
    headers, rows = trial_rows(summary)
    blocks += [
        Heading("All trials"),
        Text("Sorted by objective, best first; pruned and failed trials say why."),
        Table(headers, rows),
    ]
    blocks += _memory(summary)
    blocks += _savings(spec, summary)
    blocks.append(Heading("Plots"))
    for figure in figures:
        if figure.path is None:
            blocks.append(Text(f"{figure.title}: skipped ({figure.note})."))
        else:
            blocks.append(Image(figure.title, figure.path, figure.size))
    blocks += _spec_sections(spec)
    blocks += _provenance(spec, summary)
    return blocks


def _decision(spec: SweepSpec, summary: SweepSummary, best_config: Path | None) -> list[Block]:
    best = summary.best
    if best is None:
        return [Heading("Decision"), Text(f"Nothing to recommend: {no_best_reason(summary.study)}.")]
    verdict, retention = baseline_verdict(spec, summary), retention_verdict(summary)
    lead = (
        f"The best trial is {run_name(best.number)} ({objective_text(spec, best)}). {verdict}"
        if verdict
        else f"Fine-tune `{spec.model}` with the settings of {run_name(best.number)} ({objective_text(spec, best)})."
    )
    confirmed = decision_text(spec, summary)  # seed confirmation decided: its means, not one run, lead
    if confirmed is not None:
        lead = f"{confirmed} {verdict}".strip()
    blocks: list[Block] = [
        Heading("Decision"),
        Text(lead),
        Text(f"The decision was made on {spec.objective.meaning}, at each trial's final validation."),
        *([Text(retention)] if retention else []),
        Table(["param", "value"], [[k, format_param(v)] for k, v in model_params(best).items()]),
        *([Text(merge_text(best))] if merge_text(best) else []),
        Text("Re-run it, or take its fine-tuned checkpoint:"),
        Code(f"{reproduce_command(spec, best.number)}\n{export_command(spec, best.number)}", "bash"),
    ]
    if best_config is not None:
        blocks.append(Text(f"`{best_config.name}` next to this report holds its complete resolved NeMo config."))
    return blocks


def _against_baseline(spec: SweepSpec, summary: SweepSummary) -> list[Block]:
    """WER and BLEU, overall and per language pair: best trial (final validation) against zero-shot.
    Per-behaviour figures have their own section."""
    baseline, final = summary.baseline or {}, summary.best_final
    names = [n for n in figure_names([*baseline, *final]) if n not in behaviour_metrics(spec)]
    if not names:
        return [Heading("Best trial against the zero-shot baseline"), Text("No validation metrics recorded yet.")]
    return [
        Heading("Best trial against the zero-shot baseline"),
        Text(
            "Validation set; WER and BLEU are 0..1 fractions. Per-pair rows are `source-target` language pairs. "
            "`wer` compares the text as written; `wer_normalized` first applies Whisper's English normaliser to "
            "English (numbers as digits, contractions expanded, fillers dropped, British spellings as American), "
            "then lower-cases both sides and strips punctuation; `bleu` is sacreBLEU corpus BLEU (13a). Overall rows "
            "are corpus figures over all pairs of their kind."
        ),
        Table(COMPARISON_HEADERS, comparison_rows(names, baseline, final)),
    ]


def _retention(spec: SweepSpec, summary: SweepSummary) -> list[Block]:
    """The old domain (`data.retention`): what the best trial kept of the pretrained model's skills."""
    rows = retention_rows(summary)
    if not rows:
        return []
    limit = spec.objective.retention_max_wer_increase
    rule = (
        f" A complete trial whose retention WER rises more than {limit:g} above the zero-shot one is infeasible: "
        "never the best, and the sampler steers away from it."
        if limit is not None
        else ""
    )
    return [
        Heading("Retention: the model's old domain"),
        Text(
            f"`{', '.join(spec.data.retention)}` scored as one set after training, with the best trial's model and "
            f"the pretrained one (pruned trials are not scored).{rule}"
        ),
        Table(COMPARISON_HEADERS, rows),
    ]


def _test_set(spec: SweepSpec, summary: SweepSummary) -> list[Block]:
    test = summary.study.user_attrs.get(TEST_ATTR)
    blocks: list[Block] = [Heading("Test set")]
    if not test:
        why = "no `data.test` manifest in the spec" if spec.data.test is None else "the best trial was not scored yet"
        return [*blocks, Text(f"Not available: {why}.")]
    metrics = test.get("metrics", {})
    rows = [[name, number_text(metrics[name])] for name in figure_names(metrics, prefix="test_")]
    return [*blocks, Text(f"{run_name(test['trial'])} on `{spec.data.test}`:"), Table(["metric", "value"], rows)]


def _memory(summary: SweepSummary) -> list[Block]:
    """Where memory ran out, per freeze mode; always shown when the space varies `batch_duration`,
    since "nothing ran out" bounds the next search space too."""
    rows = memory_rows(summary.trials)
    if not rows:
        return []
    return [
        Heading("Memory"),
        Text(
            "Largest `batch_duration` that fit (complete or pruned trials) and smallest that ran out of memory, "
            "per freeze mode. Out-of-memory trials are not retried: the sampler is told they are infeasible."
        ),
        Table(MEMORY_HEADERS, rows),
    ]


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
    alphas = merge_alphas(space)
    if alphas:
        judged = ", ".join(format_param(a) for a in alphas)
        rows.append([MERGE_ALPHA, f"every one of {judged} judged after training (not sampled)"])
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
        _files_table([p.checkpoint, *p.manifests]),
        Table(["trial", "seed"], [[run_name(n), str(s)] for n, s in p.trial_seeds.items()]),
    ]


def _files_table(files: list[provenance.InputFile]) -> Table:
    """The checkpoint and every manifest, identified by content."""
    rows = [
        [
            f.role,
            f.path,
            "" if f.lines is None else str(f.lines),
            "" if f.hours is None else f"{f.hours:.4f}",
            f.sha256 or "",
            f.note,
        ]
        for f in files
    ]
    return Table(["file", "path", "lines", "hours", "sha256", "note"], rows)


# -- wording shared with best.yaml ---------------------------------------------------------------


def objective_text(spec: SweepSpec, trial: FrozenTrial) -> str:
    """`objective wer = 0.1234`; every objective's value for a multi-objective (`pareto`) sweep."""
    values = " / ".join(number_text(v) for v in trial.values or [])
    return f"objective {spec.objective.metric} = {values}"


def reproduce_command(spec: SweepSpec, number: int) -> str:
    return f"harness reproduce {spec.name} --trial {number}"


def export_command(spec: SweepSpec, number: int) -> str:
    return f"harness export {spec.name} --trial {number} --out {spec.name}-{run_name(number)}.nemo"


def _describe(dist) -> str:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return "one of " + ", ".join(format_param(c) for c in dist.choices)
    scale = ", log scale" if getattr(dist, "log", False) else ""
    step = f", step {format_param(dist.step)}" if getattr(dist, "step", None) else ""
    return f"{format_param(dist.low)} .. {format_param(dist.high)}{scale}{step}"
