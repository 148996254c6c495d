"""What one `harness status` refresh costs on a PostgreSQL study of hundreds of trials, as `--watch` polls it.

A fresh database on the machine's PostgreSQL (127.0.0.1:5432, dropped at the end) gets the demo sweep's study,
created as the supervisor creates it, and `--trials` trials as the supervisor leaves them: complete, pruned,
out of memory, failed (half re-queued), running and queued, each with its validation reports (intermediate
values) and its user attributes (seed, worker, heartbeat, run id, final figures, numerics), plus one Slurm job
recorded by a launch (so Slurm is asked as on a cluster). Timed, each `--refreshes` times:

- `watch`: a refresh of the view as `harness status --watch` does it (one opened study; Optuna's cached
  storage re-reads only the unfinished trials). Before each (untimed), a running trial reports a new step, as a
  trial process would, so every refresh has news to read.
- `open + read`: opening the storage and the study, then a refresh: what a one-shot `harness status` adds to
  its imports.
- `command`: the whole `harness status` process (imports included), 3 times.

Target: a `watch` refresh takes at most 0.5 s (a tenth of the default 5 s interval).
"""

from __future__ import annotations

import contextlib
import datetime
import io
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence

from benchmarks.cli import Verdict, conclude, header, median, parse_args, table
from benchmarks.project import Project

FULL = {"trials": 300, "refreshes": 20}
SMOKE = {"trials": 20, "refreshes": 3}
POSTGRES = "postgresql://postgres@127.0.0.1:5432"
TARGET_S = 0.5
COMMAND_RUNS = 3
SHARES = {"complete": 0.6, "pruned": 0.25, "oom": 0.04, "failed": 0.04, "running": 0.04}  # the rest: queued
NUMERICS = {
    "threads": 1, "omp_num_threads": "1", "device": "cuda:0", "cpu": "AMD EPYC 7B13", "accelerator": "gpu",
    "precision": "bf16-mixed", "devices": 1, "deterministic": False, "cudnn_benchmark": False, "seed": 0,
    "versions": {"torch": "2.5.1", "nemo_toolkit": "3.0.0", "lightning": "2.5.0", "numpy": "1.26.4"},
}  # fmt: skip


@contextlib.contextmanager
def database() -> Iterator[str]:
    """A uniquely named database on the local PostgreSQL, dropped afterwards."""
    import psycopg

    name = f"bench_status_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(f"{POSTGRES}/postgres", autocommit=True)
    except psycopg.OperationalError as exc:
        raise SystemExit(f"PostgreSQL at {POSTGRES} is not reachable ({exc}); start it first.") from None
    with admin:
        admin.execute(f"CREATE DATABASE {name}")
        try:
            yield f"{POSTGRES}/{name}"
        finally:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def kinds(trials: int) -> list[str]:
    """Each trial's kind, in the shares of a sweep well under way (at least one running)."""
    counts = {kind: max(1, round(share * trials)) for kind, share in SHARES.items()}
    listed = [kind for kind, count in counts.items() for _ in range(count)]
    return (listed + ["queued"] * trials)[:trials]


def fill(study, space, params: dict, kinds_: list[str], *, max_steps: int, every: int) -> list[int]:
    """Add the trials; the ids of the running ones (they report more steps later)."""
    from optuna.trial import TrialState, create_trial

    from harness.trial_record import TrialRecord

    states = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "oom": TrialState.PRUNED}
    states |= {"failed": TrialState.FAIL, "running": TrialState.RUNNING, "queued": TrialState.WAITING}
    now = datetime.datetime.now()
    for number, kind in enumerate(kinds_):
        last = {"complete": max_steps, "pruned": max_steps // 2, "running": max_steps // 4}.get(kind, 0)
        steps = {step: 1.0 - step / (2 * max_steps) for step in range(every, last + 1, every)}
        record = {"seed": number, "host": "node1", "pid": 4242, "worker": "node1:4242", "heartbeat": time.time()}
        record |= {"mlflow_run_id": uuid.uuid4().hex, "trial_pid": 5000 + number, "numerics": NUMERICS}
        if kind == "complete":
            figures = ("val_wer", "val_wer_normalized", "val_bleu", "val_wer/en-en", "val_bleu/en-de", "val_loss")
            record |= {"final": {f: 0.5 for f in figures}, "steps": max_steps}
        if kind in ("oom", "failed"):
            record |= {"fail_reason": "oom" if kind == "oom" else "RuntimeError: boom", "requeued": number % 2 == 0}
        started = now - datetime.timedelta(minutes=30) if kind != "queued" else None
        trial = create_trial(
            state=states[kind],
            params=params,
            distributions=space,
            value=0.5 if kind == "complete" else None,
            intermediate_values=steps,
            user_attrs=TrialRecord.attrs(**record) if kind != "queued" else {},
        )
        trial.datetime_start = started
        if started is not None and states[kind].is_finished():
            trial.datetime_complete = started + datetime.timedelta(minutes=20)
        if kind == "oom":
            trial.set_constraint("out_of_memory", 1.0)
        study.add_trial(trial)
    return [t._trial_id for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]


def timed(action, times: int, before=lambda: None) -> list[float]:
    """Seconds each of `times` calls of `action` took (`before` runs untimed ahead of each)."""
    seconds = []
    for _ in range(times):
        before()
        start = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - start)
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv, full=FULL, smoke=SMOKE)
    header("status: one `harness status` refresh on a PostgreSQL study", args)
    import optuna
    from optuna.pruners import NopPruner
    from rich.console import Console

    from benchmarks.project import fixed_params
    from harness.names import LAUNCH_JOBS_ATTR
    from harness.search_space import load_search_space
    from harness.status import read_status, status_view
    from harness.study import open_study
    from harness.sweep_lookup import read_study

    with Project("status", data=args.data, keep=args.keep) as project, database() as url:
        spec = project.spec("status", storage=url)
        space = load_search_space(spec.search_space)
        study = open_study(spec, space, pruner=NopPruner())
        study.set_user_attr(LAUNCH_JOBS_ATTR, [{"executor": "slurm", "job_id": "1001", "tasks": 2}])
        start = time.perf_counter()
        running = fill(
            study,
            space,
            fixed_params(project.search_space),
            kinds(args.trials),
            max_steps=spec.budget.max_steps,
            every=spec.budget.val_check_interval,
        )
        print(f"  filled {args.trials} trials ({len(running)} running) in {time.perf_counter() - start:.1f} s")
        reporter = optuna.load_study(study_name=spec.name, storage=url)  # a trial process's own handle
        console = Console(file=io.StringIO(), width=160)
        watched = read_study(url, spec.name)
        assert watched is not None
        step = [spec.budget.max_steps]

        def refresh(view_of) -> None:
            console.print(status_view(read_status(spec, view_of), where="bench"))

        def report() -> None:  # news for the next refresh, untimed
            step[0] += 1
            optuna.trial.Trial(reporter, running[0]).report(0.4, step=step[0])

        def open_and_read() -> None:
            fresh = read_study(url, spec.name)
            assert fresh is not None
            refresh(fresh)

        refresh(watched)  # the first refresh reads every trial once; `open + read` measures that case
        rows = []
        for label, action in (("watch", lambda: refresh(watched)), ("open + read", open_and_read)):
            seconds = timed(action, args.refreshes, before=report)
            rows.append((label, args.refreshes, median(seconds), min(seconds), max(seconds)))
        command = [sys.executable, "-m", "harness", "status", spec.name, "--storage", url]
        seconds = timed(lambda: subprocess.run(command, check=True, capture_output=True), COMMAND_RUNS)
        rows.append(("command", COMMAND_RUNS, median(seconds), min(seconds), max(seconds)))
    table(
        [(label, n, f"{m:.3f}", f"{lo:.3f}", f"{hi:.3f}") for label, n, m, lo, hi in rows],
        ("case", "n", "median s", "min s", "max s"),
    )
    watch_median = rows[0][2]
    return conclude(
        Verdict("status watch refresh median", watch_median, f"<= {TARGET_S} s", watch_median <= TARGET_S, " s")
    )


if __name__ == "__main__":
    sys.exit(main())
