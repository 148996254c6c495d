"""The report's figures, as PNG files: all matplotlib lives here (Agg backend, no display needed).

Each function draws one figure from plain trial data and returns a `Plot` that says where the
PNG is and how large it is, or, when the figure would mislead (too few trials, no data), why it
was left out: the report prints that note instead of an empty chart.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import optuna  # noqa: E402
import optuna.distributions as od  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from harness.directions import Direction  # noqa: E402
from harness.trial_record import TrialRecord  # noqa: E402

DPI = 100
WIDE = (9.0, 4.5)
PANEL = (3.6, 3.2)
TOP_CURVES = 3  # complete trials in the learning curves, best first
PRUNED_CURVES = 5  # pruned trials beside them, best-ranked first: more lines would be unreadable


@dataclass
class Plot:
    """One figure of the report: `path` is None (and `note` says why) when it was skipped."""

    name: str
    title: str
    path: Path | None
    size: tuple[int, int] = (0, 0)  # (width, height) in pixels
    note: str = ""
    figure: Figure | None = field(default=None, repr=False)  # what was drawn, for a caller (or a test) to inspect


@dataclass
class Curve:
    """One trial's validation history for the learning curves; a pruned trial's ends where it was stopped."""

    name: str
    history: Sequence[Mapping[str, float]]
    pruned: bool = False


def objective_history(trials: Sequence[FrozenTrial], direction: Direction, out: Path) -> Plot:
    """Objective per trial with the best-so-far line: did the search still improve when it stopped?"""
    title = "Objective by trial"
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    pruned = [t for t in pruned if not TrialRecord.of(t).out_of_memory]  # an OOM was not pruned
    if not complete and not pruned:
        return Plot("objective_history", title, None, note="no trial has finished yet")
    fig, (ax,) = _figure(WIDE)
    if complete:
        ax.scatter(
            [t.number for t in complete], [t.values[0] for t in complete], color="tab:blue", label="complete", zorder=3
        )
        xs, best, best_ys = [], None, []
        for t in sorted(complete, key=lambda t: t.number):
            best = t.values[0] if best is None else direction.best((best, t.values[0]))
            xs.append(t.number)
            best_ys.append(best)
        ax.step(xs, best_ys, where="post", color="tab:orange", label="best so far", linewidth=2)
    if pruned:
        last = [t.intermediate_values[max(t.intermediate_values)] for t in pruned]
        ax.scatter(
            [t.number for t in pruned], last, marker="x", color="tab:red", label="pruned (last report)", zorder=3
        )
    ax.set_xlabel("trial number")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"objective ({direction})")  # the first objective of a multi-objective study
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, "objective_history", title, out)


def param_importance(study: optuna.Study, out: Path) -> Plot:
    """Importance of each parameter for the (first) objective; with fewer than two complete trials it means nothing."""
    title = "Parameter importance"
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return Plot("param_importance", title, None, note=f"needs at least 2 complete trials (have {len(complete)})")
    if len({t.values[0] for t in complete}) < 2:
        return Plot("param_importance", title, None, note="the objective did not vary across complete trials")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the estimators warn on tiny studies; the figure says enough
            importances = optuna.importance.get_param_importances(study, target=lambda t: t.values[0])
    except Exception as exc:  # noqa: BLE001 - any failure of the estimator only costs this one figure
        return Plot("param_importance", title, None, note=f"not computable: {type(exc).__name__}: {exc}")
    if not importances or any(math.isnan(v) for v in importances.values()):
        return Plot("param_importance", title, None, note="not computable from these trials")
    names = list(importances)[::-1]  # most important on top
    fig, (ax,) = _figure(WIDE)
    ax.barh(names, [importances[n] for n in names], color="tab:green")
    ax.set_xlabel(f"importance (optuna.importance default evaluator, {len(complete)} complete trials, sums to 1)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, "param_importance", title, out)


def objective_vs_params(
    trials: Sequence[FrozenTrial], distributions: Mapping[str, od.BaseDistribution], out: Path
) -> Plot:
    """One panel per parameter, complete trials only; the learning rate on a log axis."""
    title = "Objective against each parameter"
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    if not complete or not distributions:
        return Plot("objective_vs_params", title, None, note="no complete trial yet")
    names = list(distributions)
    fig, axes = _figure((PANEL[0] * len(names), PANEL[1]), panels=len(names))
    for ax, name in zip(axes, names, strict=True):
        dist = distributions[name]
        points = [(t.params[name], t.values[0]) for t in complete if name in t.params]
        if isinstance(dist, od.CategoricalDistribution):
            labels = [str(c) for c in dist.choices]
            ax.set_xticks(range(len(labels)), labels, rotation=20)
            ax.set_xlim(-0.5, len(labels) - 0.5)
            xs = [labels.index(str(v)) for v, _ in points]
        else:
            xs = [v for v, _ in points]
            if getattr(dist, "log", False) or name == "lr":
                ax.set_xscale("log")
        ax.scatter(xs, [y for _, y in points], color="tab:blue")
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("objective")
    fig.suptitle(title)
    return _save(fig, "objective_vs_params", title, out)


def learning_curves(curves: Sequence[Curve], out: Path, metric: str = "val_wer") -> Plot:
    """`metric` against step for the top complete trials (were they still improving at `max_steps`?) and the
    best pruned ones, dashed with an x where they were stopped (did pruning stop a trial that would have won?)."""
    series = [
        (curve, [(h["step"], h[metric]) for h in curve.history if metric in h and not math.isnan(h[metric])])
        for curve in curves
    ]
    series = [(curve, points) for curve, points in series if points]
    complete = sum(not curve.pruned for curve, _ in series)
    shown = [f"top {complete} complete trial{'s' if complete > 1 else ''}"] if complete else []
    if len(series) > complete:
        shown.append(f"{len(series) - complete} best pruned (dashed, x where stopped)")
    title = f"Learning curves ({metric})" + (": " + " and ".join(shown) if shown else "")
    if not series:
        return Plot("learning_curves", title, None, note=f"no validation history with {metric}")
    fig, (ax,) = _figure(WIDE)
    for curve, points in series:
        steps, values = [s for s, _ in points], [v for _, v in points]
        if curve.pruned:
            ax.plot(
                steps,
                values,
                linestyle="--",
                marker="x",
                markevery=[len(points) - 1],  # the stop, not every validation
                markersize=9,
                markeredgewidth=2,
                alpha=0.8,
                label=f"{curve.name} (pruned at step {steps[-1]})",
            )
        else:
            ax.plot(steps, values, marker="o", linewidth=2, label=f"{curve.name} (complete)")
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the curves, never over them
    return _save(fig, "learning_curves", title, out)


def pareto_front(study: optuna.Study, out: Path) -> Plot:
    """The first two objectives of a multi-objective study, the non-dominated trials highlighted."""
    title = "Pareto front"
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return Plot("pareto_front", title, None, note="no complete trial yet")
    names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
    front = {t.number for t in study.best_trials}
    fig, (ax,) = _figure(WIDE)
    for on_front, colour, label in ((False, "tab:gray", "dominated"), (True, "tab:red", "Pareto front")):
        chosen = [t for t in complete if (t.number in front) == on_front]
        if chosen:
            ax.scatter(
                [t.values[0] for t in chosen], [t.values[1] for t in chosen], color=colour, label=label, zorder=3
            )
    directions = [d.name.lower() for d in study.directions]
    ax.set_xlabel(f"{names[0]} ({directions[0]})")
    ax.set_ylabel(f"{names[1]} ({directions[1]})")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, "pareto_front", title, out)


def retention_tradeoff(points: Sequence[tuple[float, float, bool]], direction: Direction, out: Path) -> Plot:
    """Per complete trial, (retention WER change against zero-shot, objective, infeasible): what each
    in-domain gain cost on the model's old domain, trials the retention limit refused in red."""
    title = "Objective against retention WER change"
    if not points:
        return Plot("retention_tradeoff", title, None, note="no complete trial with retention figures and a baseline")
    fig, (ax,) = _figure(WIDE)
    for infeasible, colour, label in ((False, "tab:blue", "feasible"), (True, "tab:red", "infeasible (forgets)")):
        chosen = [(change, value) for change, value, bad in points if bad == infeasible]
        if chosen:
            ax.scatter([c for c, _ in chosen], [v for _, v in chosen], color=colour, label=label, zorder=3)
    ax.axvline(0.0, color="tab:gray", linewidth=1)  # left of it the fine-tune improved the old domain
    ax.set_xlabel("retention WER change against the pretrained model (lower is better)")
    ax.set_ylabel(f"objective ({direction})")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, "retention_tradeoff", title, out)


@dataclass(frozen=True)
class FrontPoint:
    """One judged model (a trial merged at `alpha`, 1: as trained): its objective and retention WER."""

    alpha: float
    objective: float
    retention: float
    on_front: bool
    best: bool  # the model the sweep hands over


def merge_front(
    points: Sequence[FrontPoint],
    objective_label: str,
    zero_shot: tuple[float, float] | None,
    limit: float | None,
    out: Path,
) -> Plot:
    """Every judged model, coloured by its merge alpha, the front (no model better on both) joined in red, the
    model handed over starred, the pretrained model and the highest retention WER the limit allows."""
    title = "New domain against old: every trial at every merge alpha"
    if not points:
        return Plot("merge_front", title, None, note="no complete trial with an objective and a retention WER")
    fig, (ax,) = _figure(WIDE)
    shown = ax.scatter(
        [p.objective for p in points],
        [p.retention for p in points],
        c=[p.alpha for p in points],
        cmap="viridis",
        vmin=0.0,
        vmax=1.0,
        zorder=3,
    )
    fig.colorbar(shown, ax=ax, label="merge_alpha (1: the fine-tune as trained)")
    front = sorted((p for p in points if p.on_front), key=lambda p: p.objective)
    ax.plot(
        [p.objective for p in front],
        [p.retention for p in front],
        color="tab:red",
        linewidth=1.5,
        marker="o",
        markerfacecolor="none",
        markersize=11,
        drawstyle="steps-post",  # the staircase bounding what the front's models beat
        label="Pareto front",
        zorder=4,
    )
    for best in (p for p in points if p.best):
        ax.scatter(
            [best.objective],
            [best.retention],
            marker="*",
            s=260,
            color="tab:orange",
            edgecolor="black",
            label="handed over",
            zorder=5,
        )
    if zero_shot is not None:
        ax.scatter([zero_shot[0]], [zero_shot[1]], marker="s", color="black", label="zero-shot (alpha 0)", zorder=5)
    if limit is not None:
        ax.axhline(limit, color="tab:gray", linestyle="--", linewidth=1, label="retention limit")
    ax.set_xlabel(objective_label)
    ax.set_ylabel("retention WER (lower is better)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, "merge_front", title, out)


def _figure(size: tuple[float, float], panels: int = 1) -> tuple[Figure, list]:
    """A pyplot-free figure (no global state, safe in any process) of an exact pixel size, `panels` side by side."""
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    return fig, list(fig.subplots(1, panels, squeeze=False)[0])


def _save(fig: Figure, name: str, title: str, out: Path) -> Plot:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, format="png", dpi=DPI)  # no bbox_inches="tight": the pixel size stays the figure's
    width, height = fig.get_size_inches()
    return Plot(name, title, path, (round(width * DPI), round(height * DPI)), figure=fig)
