"""Which sampler should the demo use: TPE, Gaussian process (GPSampler) or random, over several sampler seeds.

Each sampler runs the demo sweep live (sweeps/canary-tiny.yaml: its search space, `start_from`, budget, pruner
and slots) once per seed; the figure is the best objective each sweep found, and the steps it spent on the way
(a sampler that proposes trials the pruner stops early spends less). With a handful of trials most of a sweep
is start-up proposals and the `start_from` settings, so differences between samplers are small; the benchmark
says whether the demo's sampler is at least as good as the alternatives on the demo. Run `harness demo-data`
first.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from benchmarks.cli import Verdict, conclude, header, parse_args, table
from benchmarks.project import Project, smoke_lines
from benchmarks.pruning import run_sweep

FULL = {"trials": 0, "steps": 0, "val_check_interval": 0, "workers": 2, "seeds": 2}  # 0: the demo spec's value
SMOKE = {"trials": 2, "steps": 2, "val_check_interval": 1, "workers": 1, "seeds": 1}
SAMPLERS = ("tpe", "gp", "random")
TOLERANCE = 0.05  # the demo's sampler may trail the best alternative by this much (relative) and still be kept


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv, full=FULL, smoke=SMOKE, lists={"samplers": SAMPLERS})
    header("samplers: the demo sweep with TPE, GP and random, per sampler seed", args)
    rows: list[tuple] = []
    best: dict[str, list[float]] = {}
    with Project("samplers", data=args.data, keep=args.keep, **smoke_lines(args)) as project:
        demo_sampler = project.demo.get("sampler", {}).get("type", "tpe")
        pruner = dict(project.demo.get("pruner") or {})
        for sampler in args.samplers:
            for seed in range(args.seeds):
                name = f"{sampler}-s{seed}"
                curves, wall, spec = run_sweep(project, name, args, seed, pruner, sampler=sampler)
                complete = [c for c in curves if c.state == "COMPLETE" and c.final is not None]
                better = min if spec.direction == "minimize" else max
                value = better((c.final for c in complete if c.final is not None), default=float("nan"))
                best.setdefault(sampler, []).append(value)
                winner = next((c for c in complete if c.final == value), None)
                rows.append(
                    (
                        sampler,
                        seed,
                        f"{value:.4f}",
                        sum(c.steps for c in curves),
                        len(complete),
                        winner.params_text if winner else "-",
                        f"{wall:.0f}",
                    )
                )
                print(f"  {name}: best {value:.4f} in {wall:.0f} s", flush=True)
    table(rows, ["sampler", "seed", "best objective", "steps", "complete", "best trial's params", "wall s"])
    means = {sampler: statistics.mean(values) for sampler, values in best.items()}
    print("mean best objective: " + ", ".join(f"{s} {v:.4f}" for s, v in means.items()))
    if demo_sampler not in means or len(means) < 2:
        print(f"the demo's sampler ({demo_sampler}) and at least one other must run for a verdict")
        return conclude()
    others = [v for s, v in means.items() if s != demo_sampler]
    rival = min(others) if spec.direction == "minimize" else max(others)
    gap = (means[demo_sampler] - rival) / abs(rival) if rival else 0.0
    if spec.direction == "maximize":
        gap = -gap
    return conclude(
        Verdict(
            f"samplers: the demo's {demo_sampler} mean best vs the best alternative (relative)",
            100 * gap,
            f"<= +{100 * TOLERANCE:.0f}%",
            gap <= TOLERANCE,
            "%",
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
