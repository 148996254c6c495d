"""Pruning that can be trusted: steps saved and best objective kept, over several sampler seeds and pruners.

For each sampler seed, the demo sweep (sweeps/canary-tiny.yaml: search space, `start_from`, budget, slots) runs
once without pruning: every trial trains its full budget and reports every validation. Each pruner setting is
then replayed over those real learning curves (`benchmarks.replay`): the harness's own pruner (built by
`harness.pruners.make_pruner` from the spec, as a live sweep builds it) judges each report as it would have in
the live sweep, with the trials on the same number of slots, so the steps saved and the best objective kept
are what that pruner would have given. One thing a replay cannot show: in a live pruned sweep the sampler sees
the pruned trials' shorter histories, so proposals after the first prune may differ. `--live` runs the demo's
own pruner live for each seed as well, to compare with its replay.

Target: mean share of steps saved >= 40%, and on every seed the best objective within 5% (relative) of the
unpruned best. Run `harness demo-data` first: the demo data is what the sweeps train on.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from benchmarks.cli import Verdict, conclude, header, parse_args, table
from benchmarks.project import Project, smoke_lines
from benchmarks.replay import Curve, Replay, replay

if TYPE_CHECKING:
    from harness.spec import SweepSpec

FULL = {"trials": 0, "steps": 0, "val_check_interval": 0, "workers": 2, "seeds": 3}  # 0: the demo spec's value
SMOKE = {"trials": 2, "steps": 2, "val_check_interval": 1, "workers": 1, "seeds": 1}
STEPS_SAVED_TARGET = 0.40
OBJECTIVE_TOLERANCE = 0.05
# The settings replayed; the demo spec's own pruner is always among them (marked "demo").
PRUNERS: dict[str, dict] = {
    "median": {"type": "median", "compare": "latest"},
    "median, 2 startup": {"type": "median", "compare": "latest", "n_startup_trials": 2},
    "median, best": {"type": "median", "compare": "best"},
    "successive halving": {"type": "successive_halving"},
    "hyperband": {"type": "hyperband"},
}


@dataclass
class Unpruned:
    """One seed's exhaustive sweep: each trial's real curve, and what it cost."""

    seed: int
    curves: list[Curve]
    wall: float


def budget(args, spec_budget: dict) -> dict:
    """The demo's budget, with any size given on the command line; never a baseline (not measured here)."""
    sizes = {"trials": args.trials, "max_steps": args.steps, "val_check_interval": args.val_check_interval}
    return {**spec_budget, **{k: v for k, v in sizes.items() if v}, "baseline": False}


def run_sweep(
    project: Project, name: str, args, seed: int, pruner: dict, sampler: str | None = None
) -> tuple[list[Curve], float, SweepSpec]:
    """A real sweep on `args.workers` slots (the demo's sampler type unless `sampler`, seeded `seed`); each
    trial's params, reported curve, steps and final objective."""
    from harness.trial_record import TrialRecord

    spec = project.spec(
        name,
        budget=budget(args, project.demo["budget"]),
        pruner=pruner,
        sampler={"seed": seed, **({"type": sampler} if sampler else {})},
    )
    supervisor = project.supervisor(spec, f"{name}.log", workers=args.workers)
    started = time.time()
    supervisor.run()
    wall = time.time() - started
    curves = []
    for t in sorted(supervisor.study.get_trials(deepcopy=False), key=lambda t: t.number):
        steps = TrialRecord.of(t).steps or max(t.intermediate_values, default=0)
        curves.append(Curve(t.number, dict(t.params), dict(t.intermediate_values), steps, t.value, t.state.name))
    return curves, wall, spec


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv, full=FULL, smoke=SMOKE, switches={"live": "also run live"})
    header("pruning: pruners replayed over unpruned sweeps, per sampler seed", args)
    seeds = list(range(args.seeds))
    unpruned: list[Unpruned] = []
    live: dict[int, tuple[list[Curve], float]] = {}
    with Project("pruning", data=args.data, keep=args.keep, **smoke_lines(args)) as project:
        demo_pruner = dict(project.demo.get("pruner") or {})
        for seed in seeds:
            curves, wall, _ = run_sweep(project, f"unpruned-s{seed}", args, seed, {"type": "none"})
            unpruned.append(Unpruned(seed, curves, wall))
            print(f"  seed {seed}: unpruned sweep done in {wall:.0f} s", flush=True)
            if args.live:
                curves, wall, _ = run_sweep(project, f"pruned-s{seed}", args, seed, demo_pruner)
                live[seed] = (curves, wall)
                print(f"  seed {seed}: live pruned sweep done in {wall:.0f} s", flush=True)
        settings = {"demo": demo_pruner, **PRUNERS}
        sizes = budget(args, project.demo["budget"])
        results = {
            label: [
                replay(project.spec(f"replay-{i}", budget=sizes, pruner=pruner), run.curves, args.workers)
                for run in unpruned
            ]
            for i, (label, pruner) in enumerate(settings.items())
        }
    for run in unpruned:
        print(f"seed {run.seed}: unpruned sweep, {sum(c.steps for c in run.curves)} steps, wall {run.wall:.0f} s")
        table(
            [(c.number, c.params_text, c.final_text, c.curve_text) for c in run.curves],
            ["trial", "params", "final objective", "reported objective by step"],
        )
    print("replays (steps used of the unpruned sweep's, best objective against the unpruned best, trials complete):")
    rows = []
    for label, replays in results.items():
        for run, result in zip(unpruned, replays, strict=True):
            rows.append((label, run.seed, *result.row()))
        rows.append((label, "mean", *summary_row(replays)))
    table(
        rows,
        ["pruner", "seed", "steps", "unpruned", "saved %", "best", "unpruned best", "gap %", "complete", "pruned at"],
    )
    for seed, (curves, wall) in live.items():
        steps = sum(c.steps for c in curves)
        predicted = results["demo"][seed]
        pruned = [c.number for c in curves if c.state == "PRUNED"]
        print(
            f"seed {seed} live with the demo pruner: {steps} steps (replay {predicted.steps}), "
            f"pruned {pruned} (replay {predicted.pruned_numbers}), wall {wall:.0f} s"
        )
    demo = results["demo"]
    saved = statistics.mean(r.saved for r in demo)
    worst_gap = max(r.gap for r in demo)
    return conclude(
        Verdict(
            "pruning: mean share of steps saved (demo pruner)",
            100 * saved,
            f">= {100 * STEPS_SAVED_TARGET:.0f}%",
            saved >= STEPS_SAVED_TARGET,
            "%",
        ),
        Verdict(
            "pruning: worst seed's best objective vs unpruned (relative)",
            100 * worst_gap,
            f"<= +{100 * OBJECTIVE_TOLERANCE:.0f}%",
            worst_gap <= OBJECTIVE_TOLERANCE,
            "%",
        ),
    )


def summary_row(replays: list[Replay]) -> tuple:
    saved = statistics.mean(r.saved for r in replays)
    return (
        "",
        "",
        f"{100 * saved:.1f}",
        "",
        "",
        f"max {100 * max(r.gap for r in replays):.1f}",
        f"{statistics.mean(r.complete for r in replays):.1f}",
        "",
    )


if __name__ == "__main__":
    raise SystemExit(main())
