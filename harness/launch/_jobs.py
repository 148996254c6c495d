"""What every job of a launch runs: the `harness` command's `worker` verb, in the job's own Python process.

submitit pickles `run_worker` by reference into the log folder, so the job's Python must import this
harness. The job runs the command's module entry (`python -m harness worker ...`, in-process), so its
log is the worker's output, a stop (SIGTERM, Ctrl-C, the time limit) is recorded by the worker as it
always is, and a worker that exits non-zero fails its job.
"""

from __future__ import annotations

import os
import runpy
import shlex
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.spec import STATE_DIR, SweepSpec

STOP_WARNING_SECONDS = 90  # submitit's SIGUSR2 this long before the time limit; the worker stops on it


class WorkerFailed(RuntimeError):
    """`harness worker` exited non-zero inside a job; submitit records the job as failed."""


@dataclass(frozen=True)
class WorkerCommand:
    """What every job of a launch runs: `harness worker` arguments, in the sweep's project directory."""

    argv: list[str]
    cwd: str
    python: str  # the jobs' interpreter, as a shell word

    @property
    def text(self) -> str:
        """The equivalent shell line, passwords in store URLs redacted (it is printed and logged)."""
        from harness.stores import redact

        return f"cd {shlex.quote(self.cwd)} && {self.python} -m harness " + shlex.join(map(redact, self.argv))


def run_worker(argv: list[str], cwd: str, text: str) -> int:
    """The function each job runs: `python -m harness` with `argv`, in this process.

    submitit's job process ignores SIGTERM and turns its time-limit warning (SIGUSR2) into a requeue,
    and a local job starts with SIGINT ignored (see `_local`). The worker wants its own: Ctrl-C
    and SIGTERM stop and record as for `harness worker`, and the warning becomes a SIGTERM, so the
    worker stops cleanly, its trial re-queued for the others, before the scheduler kills it."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGUSR2, _time_limit_warning)
    os.chdir(cwd)
    print(f"harness launch: this job runs `{text}`", flush=True)
    sys.argv[1:] = argv
    code: int | str | None = 0
    try:
        runpy.run_module("harness", run_name="__main__", alter_sys=True)
    except SystemExit as done:  # `python -m harness` ends in sys.exit(main())
        code = done.code
    if code:
        raise WorkerFailed(f"harness worker exited with {code}")
    return 0


def _time_limit_warning(signum: int, frame: object) -> None:
    """Slurm's warning (`--signal=USR2@90`): the job's time limit is near; the worker stops as on SIGTERM."""
    print(f"harness launch: the job's time limit is {STOP_WARNING_SECONDS} s away (SIGUSR2): stopping", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)


def worker_command(spec: SweepSpec, *, gpus: int, python: str) -> WorkerCommand:
    """`harness worker` on this spec's stores, URLs resolved here (where the spec and environment are).

    A job with GPUs runs one trial per `training.devices` of them (the worker's default); a job
    without GPUs runs one trial at a time, which `--workers 1` says explicitly."""
    argv = ["worker", str(Path(spec.source).resolve()), "--storage", spec.storage_url]
    argv += ["--tracking-uri", spec.tracking_uri, *([] if gpus else ["--workers", "1"])]
    return WorkerCommand(argv=argv, cwd=os.getcwd(), python=python)


def log_dir(spec: SweepSpec) -> Path:
    """Where submitit writes the jobs' scripts, pickles and logs (on Slurm: a folder every node sees)."""
    return Path(spec.launch.log_dir or STATE_DIR / "launch" / spec.name).expanduser().resolve()
