"""What the supervisor says while it runs: a line per outcome, and the live view of slots and trials."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.markup import escape

from harness.canary import CheckpointInfo, released_overrides
from harness.names import run_name
from harness.number_text import metrics_text, params_text, value_text
from harness.progress import SweepView
from harness.spec import SweepSpec
from harness.study import primary_value
from harness.sweep._outcomes import Outcome
from harness.sweep._process import TrialProcess
from harness.tracking import Tracker
from harness.trial_record import TrialRecord


def print_outcome(view: SweepView, outcome: Outcome, *, best: FrozenTrial | None, used: int, budget: int) -> None:
    """`trial-0003 COMPLETE objective=...`, then the budget used and the best so far."""
    name = run_name(outcome.number)
    if outcome.repeat_of is not None:
        said = f"objective={value_text(outcome.value)}" if outcome.reason is None else outcome.reason
        view.log(
            f"  {name} repeats {run_name(outcome.repeat_of)}'s params: answered from its result, nothing trained "
            f"({outcome.state.name} {said})"
        )
    elif outcome.state == TrialState.COMPLETE:
        final = outcome.result.final if outcome.result is not None else {}
        metrics = {k: v for k, v in final.items() if k != "step"}
        alpha = outcome.result.merge_alpha if outcome.result is not None else None
        merged = "" if alpha is None else f" (merged: merge_alpha={alpha:g})"  # `harness.merging`
        view.log(f"  {name} [green]COMPLETE[/] objective={value_text(outcome.value)}{merged} {metrics_text(metrics)}")
        if outcome.reason:  # infeasible (retention limit), or not judged
            view.log(f"  {name} [yellow]{escape(outcome.reason)}[/]")
    elif outcome.out_of_memory:
        view.log(f"  {name} [red]OOM[/] out of memory: infeasible, the sampler avoids its params; not retried")
    elif outcome.state == TrialState.PRUNED:
        view.log(f"  {name} [yellow]PRUNED[/] ({outcome.reason})")
    else:  # a reason quotes the error, whose `[/path...]` rich would read as markup
        view.log(f"  {name} [red]FAIL[/] {escape(str(outcome.reason))}")
    best_text = f", best so far {run_name(best.number)} = {primary_value(best):.4f}" if best else ""
    view.log(f"  [dim]{used}/{budget} trials used{best_text}[/]")


def started_text(number: int, params: dict, record: TrialRecord) -> str:
    """`trial-0000 started: lr=0.0003 ...`, and which `start_from` entry gave the params."""
    given = f" [dim](start_from[{record.start_from}])[/]" if record.start_from is not None else ""
    return f"[bold]{run_name(number)}[/] started: {params_text(params)}{given}"


def refresh_view(
    view: SweepView,
    study: optuna.Study,
    best: FrozenTrial | None,
    used: int,
    running: dict[int, TrialProcess],
    slots: int,
) -> None:
    """Counts, the best so far and each running trial's last validation; out of memory counts as failed."""
    trials = study.get_trials(deepcopy=False)
    oom = sum(t.state == TrialState.PRUNED and TrialRecord.of(t).out_of_memory for t in trials)
    states = [t.state for t in trials]
    counts = {
        "done": used - len(running),
        "running": len(running),
        "pruned": states.count(TrialState.PRUNED) - oom,
        "failed": states.count(TrialState.FAIL) + oom,
    }
    best_text = f"{run_name(best.number)} = {primary_value(best):.4f}" if best else "-"
    view.refresh(counts, best_text, [(run_name(r.trial.number), r.trial_dir) for r in running.values()], slots)


def print_validations(view: SweepView, running: Iterable[TrialProcess]) -> None:
    """Without a terminal, a line per new validation of each of these trials (`SweepView.log_validations`)."""
    now = time.monotonic()
    view.log_validations([(run_name(r.trial.number), r.trial_dir, now - r.started) for r in running])


def sweep_params(spec: SweepSpec, info: CheckpointInfo, nemo: Path) -> dict:
    """The sweep's settings as its MLflow parent run's params."""
    b = spec.budget
    return {
        "model": spec.model,
        "checkpoint": nemo.name,
        "trials": b.trials,
        "max_steps": b.max_steps,
        "val_check_interval": b.val_check_interval,
        "objective": spec.objective.metric,
        "direction": spec.direction,
        "pruner": spec.pruner.type,
        "sampler": spec.sampler.type,
        "sampler_seed": spec.sampler.seed,
        "search_space": spec.search_space,
        "tokenizer": info.tokenizer_kind,
        "prompt_format": info.prompt_format,
        "behaviours": ", ".join(f"{name}={b.on}/{b.off} ({b.field})" for name, b in sorted(spec.behaviours.items()))
        or "none",
    }


def note_reset_keys(view: SweepView, info: CheckpointInfo) -> None:
    """Say once per sweep which released-config keys config surgery resets (they would bypass trials)."""
    reset = released_overrides(info.config)
    if reset:
        view.log(f"[dim]The checkpoint's config carries keys that would bypass the trial; reset: {', '.join(reset)}[/]")


def summarise_on_parent(tracker: Tracker, parent_run: str, best: FrozenTrial | None) -> None:
    """Best-trial summary metrics on the parent run (search_runs shows last values, not best)."""
    value = primary_value(best) if best is not None else None
    if best is None or value is None:
        return
    tracker.log_metrics(parent_run, {"best_objective": value, "best_trial_number": best.number})
    tracker.set_tags(parent_run, {"harness.best_trial": run_name(best.number)})
