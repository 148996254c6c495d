"""Memory: peak RSS of the supervisor and of a trial process; the supervisor must stay flat over many trials.

A sweep's supervisor lives for days and hundreds of trials; any per-trial growth (records, caches, open
files) is a slow leak. The supervisor's RSS is sampled right after each trial is recorded (its `on_outcome`
hook), and its slope per trial is fitted after a short warm-up. Trials are tiny (a few steps, a short
validation manifest): their training is not what is measured. `--trace` adds tracemalloc to the supervisor
and prints where its Python heap grew between the warm-up and the last trial.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Sequence

from benchmarks.cli import Verdict, conclude, header, median, parse_args, table
from benchmarks.probe import status_mib
from benchmarks.project import BenchmarkMismatch, Project, smoke_lines

FULL = {"trials": 20, "steps": 5, "val_check_interval": 5}
SMOKE = {"trials": 2, "steps": 2, "val_check_interval": 2}
WARMUP_TRIALS = 5
SLOPE_TARGET_MIB = 0.1  # per trial: 100 MiB over a 1000-trial sweep


def slope(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of (trial, MiB)."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


class Sampler:
    """`Supervisor(on_outcome=...)`: the supervisor's RSS right after each trial is recorded, and with
    `trace` tracemalloc snapshots after the warm-up and after the last trial."""

    def __init__(self, trials: int, trace: bool) -> None:
        self.trials, self.trace = trials, trace
        self.samples: list[tuple[int, float, int]] = []  # (trial count, supervisor MiB, trial number)
        self.snapshots: list[tracemalloc.Snapshot] = []

    def __call__(self, outcome) -> None:
        self.samples.append((len(self.samples) + 1, status_mib("VmRSS"), outcome.number))
        if self.trace and len(self.samples) in (WARMUP_TRIALS, self.trials):
            self.snapshots.append(tracemalloc.take_snapshot())
        print(f"  trial {len(self.samples)}/{self.trials}: supervisor {self.samples[-1][1]:.1f} MiB", flush=True)


def run_sweep(args, sampler: Sampler) -> tuple[float, list[float]]:
    """The sweep, sampled after each trial: the supervisor's RSS once built, and each trial's peak RSS."""
    from harness.trial_record import TrialRecord

    lines = smoke_lines(args) | {"validation_lines": args.validation_lines or 8}
    with Project("memory", data=args.data, keep=args.keep, **lines) as project:
        budget = {"trials": args.trials, "max_steps": args.steps, "val_check_interval": args.val_check_interval}
        spec = project.spec("memory", budget=budget | {"baseline": False})
        supervisor = project.supervisor(spec, "supervisor.log", on_outcome=sampler)
        built_rss = status_mib("VmRSS")
        supervisor.run()
        trials = supervisor.study.get_trials(deepcopy=False)
        numbers = [number for _, _, number in sampler.samples]
        every_trial_trained(trials, numbers, trials_wanted=args.trials, steps=args.steps)
        pids = [int(TrialRecord.of(trials[number]).trial_pid or 0) for number in numbers]
        return built_rss, [project.probe(pid)["peak_rss_mib"] for pid in pids]


def every_trial_trained(trials: list, numbers: list[int], *, trials_wanted: int, steps: int) -> None:
    """Each sampled outcome (`numbers`) is a trial that trained `steps` steps in a process of its own, and
    there are `trials_wanted` of them.

    The demo sweep runs as shipped (its `start_from` entry is trial 0), so a sweep feature that answers a
    trial without a process (a repeat) or stops one early would sample the supervisor after no trial, or
    after a shorter one: the benchmark fails instead of reporting a slope over fewer trials than it says."""
    from harness.trial_record import TrialRecord

    if len(numbers) != trials_wanted:
        raise BenchmarkMismatch(f"the sweep recorded {len(numbers)} outcomes, not the {trials_wanted} measured")
    for number in numbers:
        trial, record = trials[number], TrialRecord.of(trials[number])
        if record.repeat_of is not None or record.trial_pid is None:
            raise BenchmarkMismatch(f"trial {number} was answered without training a process ({trial.params})")
        if trial.state.name != "COMPLETE" or record.steps != steps:
            raise BenchmarkMismatch(f"trial {number} ended {trial.state.name} after {record.steps} of {steps} steps")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(
        __doc__.splitlines()[0],
        argv,
        full=FULL,
        smoke=SMOKE,
        switches={"trace": "tracemalloc in the supervisor: where its heap grows after the warm-up"},
    )
    header("memory: supervisor and trial RSS", args)
    if args.trace:  # `--trace`: where the supervisor's Python heap grows after the warm-up trials
        tracemalloc.start(8)
    start_rss = status_mib("VmRSS")
    sampler = Sampler(args.trials, args.trace)
    built_rss, trial_peaks = run_sweep(args, sampler)
    table(
        [(n, rss, peak) for (n, rss, _), peak in zip(sampler.samples, trial_peaks, strict=True)],
        ["trial", "supervisor RSS MiB", "trial peak RSS MiB"],
    )
    points = [(n, rss) for n, rss, _ in sampler.samples]
    warm = points[WARMUP_TRIALS:] if len(points) > 2 * WARMUP_TRIALS else points
    print(
        f"supervisor RSS: {start_rss:.1f} MiB before, {built_rss:.1f} MiB once built, "
        f"{points[0][1]:.1f} after trial 1, {points[-1][1]:.1f} after trial {len(points)}; "
        f"peak (VmHWM) {status_mib('VmHWM'):.1f} MiB"
    )
    print(f"trial process peak RSS: median {median(trial_peaks):.1f} MiB, max {max(trial_peaks):.1f} MiB")
    print(f"slope over all {len(points)} trials: {slope(points):+.3f} MiB/trial")
    if len(sampler.snapshots) == 2:
        print(f"Python heap growth from trial {WARMUP_TRIALS} to {args.trials}, largest sites:")
        for stat in sampler.snapshots[1].compare_to(sampler.snapshots[0], "lineno")[:12]:
            print(f"  {stat.size_diff / 1024:+8.1f} KiB {stat.count_diff:+6d} blocks  {stat.traceback[0]}")
    growth = slope(warm)
    return conclude(
        Verdict(
            f"memory: supervisor RSS slope over trials {warm[0][0]}-{warm[-1][0]}",
            growth,
            f"<= {SLOPE_TARGET_MIB} MiB/trial",
            growth <= SLOPE_TARGET_MIB,
            " MiB/trial",
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
