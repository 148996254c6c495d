"""The jobs `harness launch` submitted for a sweep (recorded on its study), and what Slurm says of them now.

`squeue` knows the jobs that pend or run (one line per array task); `sacct` the ones that ended, where Slurm
keeps accounting. Both are asked once per refresh for all the sweep's jobs, with a short timeout: a view
polled every few seconds must not hang on a slow controller. Where neither command exists (a laptop reading a
cluster's store) the jobs are listed with one line saying their state cannot be read here.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

SLURM_TIMEOUT_S = 10
SLURM = "slurm"


@dataclass(frozen=True)
class LaunchJob:
    """One submission of `harness launch` (a Slurm job array, or local jobs), as the launch recorded it."""

    executor: str
    job_id: str
    tasks: int
    submitted: str
    log_dir: str


@dataclass(frozen=True)
class TaskState:
    """One Slurm job or array task: `1234_0 RUNNING 12:03` or `1234_[2-3] PENDING (Resources)`."""

    task: str
    state: str
    elapsed: str = ""
    reason: str = ""

    def text(self) -> str:
        reason = f" ({self.reason})" if self.reason and self.reason != "None" else ""
        elapsed = f" {self.elapsed}" if self.elapsed and self.state != "PENDING" else ""
        return f"{self.task} {self.state}{elapsed}{reason}"


def launch_jobs(recorded: Any) -> list[LaunchJob]:
    """The study's `launch_jobs` attribute as jobs; entries that are not what a launch writes are skipped."""
    jobs = []
    for entry in recorded if isinstance(recorded, list) else []:
        if isinstance(entry, dict) and entry.get("job_id") is not None:
            jobs.append(
                LaunchJob(
                    executor=str(entry.get("executor", "")),
                    job_id=str(entry["job_id"]),
                    tasks=int(entry.get("tasks") or 1),
                    submitted=str(entry.get("submitted", "")),
                    log_dir=str(entry.get("log_dir", "")),
                )
            )
    return jobs


def slurm_states(jobs: list[LaunchJob]) -> dict[str, list[TaskState]] | str:
    """Each Slurm job's tasks as `squeue`, else `sacct`, reports them; or one line saying why none can be read."""
    ids = [job.job_id for job in jobs if job.executor == SLURM]
    if not ids:
        return {}
    if shutil.which("squeue") is None and shutil.which("sacct") is None:
        return "squeue and sacct are not on this machine: run `harness status` on the cluster to see the jobs' state"
    queue = _ask(["squeue", "--noheader", "--array", f"--jobs={','.join(ids)}", "--format=%i|%T|%M|%r"])
    if queue.error is not None and UNKNOWN_JOB not in queue.error:  # (that one only says the jobs have ended)
        return f"Slurm did not answer ({queue.error}): the jobs' state is unknown"
    states: dict[str, list[TaskState]] = {job_id: [] for job_id in ids}
    for row in sorted((r for r in queue.rows if len(r) >= 4), key=lambda r: _task_order(r[0])):
        states.setdefault(_job_of(row[0]), []).append(TaskState(*row[:4]))
    ended = [job_id for job_id, tasks in states.items() if not tasks]
    if ended:
        accounts = _ask(
            [
                "sacct",
                "--noheader",
                "--parsable2",
                "--allocations",
                f"--jobs={','.join(ended)}",
                "--format=JobID,State,Elapsed",
            ]
        )
        for row in (r for r in accounts.rows if len(r) >= 3):
            states.setdefault(_job_of(row[0]), []).append(TaskState(*row[:3]))
        why = accounts.error or "sacct keeps no record of it"
        for job_id in ended:
            states[job_id] = states[job_id] or [TaskState(job_id, "not in the queue", reason=f"ended; {why}")]
    return states


UNKNOWN_JOB = "Invalid job id"  # squeue's answer for a job that has left the queue (`-j` with only such jobs)


@dataclass(frozen=True)
class _Answer:
    rows: list[list[str]]  # the `|`-separated fields of each output line
    error: str | None = None


def _job_of(task: str) -> str:
    """`1234` of an array task `1234_5` (or a step `1234.0`)."""
    return task.split("_", 1)[0].split(".", 1)[0]


def _task_order(task: str) -> tuple[str, int, str]:
    """Array tasks by index (`squeue` lists the pending ones first)."""
    job, _, index = task.partition("_")
    return (job, int(index) if index.isdigit() else -1, index)


def _ask(command: list[str]) -> _Answer:
    """Run a Slurm command; its output lines, or its first line of complaint (missing, failed, timed out)."""
    if shutil.which(command[0]) is None:
        return _Answer([], f"{command[0]} is not on this machine")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=SLURM_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return _Answer([], f"{command[0]} gave no answer within {SLURM_TIMEOUT_S} s")
    except OSError as exc:
        return _Answer([], f"{command[0]}: {exc.strerror or exc}")
    if done.returncode != 0:
        said = [line.strip().removeprefix(f"{command[0]}: ") for line in done.stderr.splitlines() if line.strip()]
        return _Answer([], f"{command[0]}: {said[-1] if said else f'exit {done.returncode}'}")
    return _Answer([line.split("|") for line in done.stdout.splitlines() if line.strip()])
