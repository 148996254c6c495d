"""Sweep efficiency: the demo sweep with the median pruner vs without, same sampler seed and trial count.

Pruning is the harness's promise to waste no GPU time on hopeless trials: it must spend far fewer training
steps and still find (nearly) the same best WER as the exhaustive sweep. Both sweeps use the settings of
sweeps/canary-tiny.yaml (search space, TPE seed, pruner startup and comparison) and, by default, its budget:
6 trials of 200 steps, validated every 50 steps, the pruner's warm-up one validation interval (as in the demo).
Smaller budgets teach canary-tiny too little for the trials to separate (at 100 steps most stay near the
zero-shot WER). Run `python -m harness.cli demo-data` first: the demo data is what both sweeps train on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.cli import Verdict, conclude, header, parse_args, table
from benchmarks.project import Project, smoke_lines

FULL = {"trials": 6, "steps": 200, "val_check_interval": 50}
SMOKE = {"trials": 1, "steps": 2, "val_check_interval": 1}
STEPS_SAVED_TARGET = 0.40
WER_TOLERANCE = 0.05


@dataclass
class Sweep:
    """What one sweep spent and found."""

    name: str
    rows: list[tuple]  # per trial: number, params, state, steps, objective, reported curve
    steps: int
    best: float
    wall: float
    compare: str


def run_sweep(project: Project, name: str, args, pruner: dict) -> Sweep:
    from harness.search_space import format_param
    from harness.trial_record import TrialRecord

    spec = project.spec(
        name,
        budget={
            "trials": args.trials,
            "max_steps": args.steps,
            "val_check_interval": args.val_check_interval,
            "baseline": False,
        },
        pruner=pruner,
    )
    supervisor = project.supervisor(spec, f"{name}.log")
    started = time.time()
    supervisor.run()
    wall = time.time() - started
    rows, steps = [], 0
    for t in supervisor.study.get_trials(deepcopy=False):
        trained = TrialRecord.of(t).steps or max(t.intermediate_values, default=0)
        steps += trained
        params = " ".join(f"{k}={format_param(v)}" for k, v in t.params.items())
        value = t.value if t.value is not None else min(t.intermediate_values.values(), default=float("nan"))
        curve = " ".join(f"{step}:{v:.2f}" for step, v in sorted(t.intermediate_values.items()))
        rows.append((t.number, params, t.state.name, trained, value, curve))
    best = supervisor.study.best_value if any(r[2] == "COMPLETE" for r in rows) else float("nan")
    return Sweep(name, rows, steps, best, wall, spec.pruner.compare)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv, full=FULL, smoke=SMOKE)
    header("pruning: median pruner vs none, same seed and trials", args)
    with Project("pruning", data=args.data, keep=args.keep, **smoke_lines(args)) as project:
        pruned = run_sweep(project, "pruned", args, {"type": "median", "n_warmup_steps": args.val_check_interval})
        print(f"  pruned sweep done in {pruned.wall:.0f} s", flush=True)
        exhaustive = run_sweep(project, "unpruned", args, {"type": "none"})
        print(f"  unpruned sweep done in {exhaustive.wall:.0f} s", flush=True)
    for sweep in (pruned, exhaustive):
        print(f"{sweep.name}: {sweep.steps} training steps, best WER {sweep.best:.4f}, wall {sweep.wall:.0f} s")
        table(
            sweep.rows,
            ["trial", "params", "state", "steps", "WER (final, or best reported if pruned)", "reported WER by step"],
        )
    print(
        f"pruner: median, compare={pruned.compare} (latest: the value just reported meets the median of the "
        "complete trials at that step)"
    )
    same = sum(p[1] == u[1] for p, u in zip(pruned.rows, exhaustive.rows, strict=False))
    print(
        f"trials with identical params in both sweeps: {same}/{len(pruned.rows)} "
        "(TPE sees the pruned trials' histories, so later proposals may differ)"
    )
    print(f"wall time pruned/unpruned: {pruned.wall / exhaustive.wall:.3f}")
    saved = 1 - pruned.steps / max(1, exhaustive.steps)
    gap = (pruned.best - exhaustive.best) / exhaustive.best if exhaustive.best else float("nan")
    return conclude(
        Verdict(
            "pruning: share of training steps saved",
            100 * saved,
            f">= {100 * STEPS_SAVED_TARGET:.0f}%",
            saved >= STEPS_SAVED_TARGET,
            "%",
        ),
        Verdict(
            "pruning: best WER pruned vs unpruned (relative)",
            100 * gap,
            f"<= +{100 * WER_TOLERANCE:.0f}%",
            gap <= WER_TOLERANCE,
            "%",
        ),
    )


if __name__ == "__main__":
    raise SystemExit(main())
