"""`harness launch` on this machine: N worker jobs through submitit's LocalExecutor, awaited.

Each job gets its own share of the GPUs (left alone, submitit gives every local job GPUs 0..n-1).
Stops: submitit's per-job controller SIGKILLs its worker a second after a SIGINT, too soon for the
worker to record its stop. So the controllers start with SIGINT ignored; a terminal's Ctrl-C reaches
the workers themselves, which record their stop as `harness worker` does, and `harness launch` then
asks any worker still running to stop (SIGTERM, which its controller forwards), waits, and kills what
is left: no worker outlives `harness launch`.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.console import Console

from harness.devices import gpu_shares
from harness.launch._jobs import STOP_WARNING_SECONDS, log_dir, run_worker, worker_command
from harness.spec import SweepSpec
from harness.stopping import EXIT_CODES, reason_of, stop_requests

STOP_WAIT_SECONDS = 90  # a stopping worker ends its trials (10 s grace each, at once) and records them
POLL_SECONDS = 1.0


def run_local(submitit: ModuleType, spec: SweepSpec, *, dry_run: bool, console: Console) -> int:
    """Start the jobs, wait for all, say how each ended; 0 when every worker succeeded."""
    launch = spec.launch
    shares = gpu_shares(launch.workers, launch.gpus_per_worker)
    python = launch.python or shlex.quote(sys.executable)
    command = worker_command(spec, gpus=len(shares[0]), python=python)
    gpus = " | ".join(",".join(map(str, share)) for share in shares) if shares[0] else "none (CPU workers)"
    console.print(
        f"{'Would start' if dry_run else 'Starting'} {launch.workers} local worker job(s) for sweep {spec.name}; "
        f"GPUs per job: {gpus}; logs: {log_dir(spec)}\nEach runs: {command.text}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    if dry_run:
        return 0
    if launch.setup:
        console.print("[yellow]note:[/] `launch.setup` is for Slurm jobs; local jobs run in this environment.")
    executor = submitit.LocalExecutor(folder=log_dir(spec), python=python)
    jobs: list[Any] = []
    reported: set[int] = set()  # jobs whose end was printed
    try:
        with stop_requests():  # SIGTERM to `harness launch` stops the workers as Ctrl-C does
            with _job_environment(launch.env):
                for share in shares:
                    executor.update_parameters(
                        timeout_min=launch.time_minutes,
                        gpus_per_node=len(share),
                        visible_gpus=share,
                        stderr_to_stdout=True,
                        signal_delay_s=STOP_WARNING_SECONDS,
                    )
                    jobs.append(executor.submit(run_worker, command.argv, command.cwd, command.text))
            for index, job in enumerate(jobs):
                console.print(f"  worker {index + 1}: job {job.job_id}, log {job.paths.stdout}", highlight=False)
            _await(jobs, reported, console)
    except KeyboardInterrupt as stop:
        _stop(jobs, console)
        _summary(jobs, reported, console)
        return EXIT_CODES[reason_of(stop)]
    except BaseException:
        _stop(jobs, console)
        raise
    return 0 if _summary(jobs, reported, console) else 1


@contextlib.contextmanager
def _job_environment(env: dict[str, str]) -> Iterator[None]:
    """While jobs start: `launch.env` set, and SIGINT ignored, which the controllers inherit (Python
    leaves an ignored SIGINT ignored); `run_worker` restores Ctrl-C in the worker itself. A controller
    then never kills its worker on Ctrl-C, and `LocalJob.cancel` (a SIGINT) is not used."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _await(jobs: list[Any], reported: set[int], console: Console) -> None:
    """Poll until every job has ended, printing each as it ends."""
    while len(reported) < len(jobs):
        for index, job in enumerate(jobs):
            if index not in reported and job.done():
                reported.add(index)
                console.print(_line(index, job), highlight=False, markup=False)
        if len(reported) < len(jobs):
            time.sleep(POLL_SECONDS)


def _stop(jobs: list[Any], console: Console) -> None:
    """Ask the running workers to stop and wait for them; kill what remains (a second Ctrl-C: at once)."""
    running = [job for job in jobs if not job.done()]
    if not running:
        return
    console.print(
        f"[yellow]Stopping {len(running)} worker(s):[/] each records its stop and re-queues its trials "
        f"(up to {STOP_WAIT_SECONDS} s; Ctrl-C again kills them now).",
        highlight=False,
    )
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        try:
            time.sleep(1.0)  # a terminal's Ctrl-C reached the workers too: let them shield their stop first
            for job in running:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(job.job_id), signal.SIGTERM)  # a LocalJob's id is its controller's pid
            deadline = time.monotonic() + STOP_WAIT_SECONDS
            while any(not job.done() for job in running) and time.monotonic() < deadline:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        for job in running:
            if not job.done():
                _kill(job)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _kill(job: Any) -> None:
    """SIGKILL a job's worker (the controller's child; its trials die with it) and its controller."""
    controller = int(job.job_id)
    children = Path(f"/proc/{controller}/task/{controller}/children")
    pids = [int(pid) for pid in children.read_text().split()] if children.exists() else []
    for pid in [*pids, controller]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not job.done() and time.monotonic() < deadline:
        time.sleep(0.2)


def failure(job: Any) -> str | None:
    """None when the job's worker succeeded, else why not, in a few words."""
    if not job.paths.result_pickle.exists():
        return "ended without a result (stopped or killed; see its log)"
    error = job.exception()
    if error is None:
        return None
    said = [line for line in str(error).splitlines() if "WorkerFailed:" in line]
    return said[-1].split("WorkerFailed:", 1)[1].strip() if said else "failed (see its log)"


def _line(index: int, job: Any) -> str:
    why = failure(job)
    state = "succeeded" if why is None else f"FAILED: {why}"
    return f"  worker {index + 1} (job {job.job_id}) {state}; log {job.paths.stdout}"


def _summary(jobs: list[Any], reported: set[int], console: Console) -> bool:
    """The jobs not yet printed, the count, the failed workers' logs; True when every worker succeeded."""
    for index, job in enumerate(jobs):
        if index not in reported:
            console.print(_line(index, job), highlight=False, markup=False)
    failed = [job for job in jobs if failure(job) is not None]
    console.print(f"{len(jobs) - len(failed)} of {len(jobs)} worker job(s) succeeded.", highlight=False)
    if failed:
        console.print("Logs of the failed workers: " + ", ".join(str(j.paths.stdout) for j in failed), highlight=False)
    return not failed
