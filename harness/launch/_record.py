"""The Slurm jobs behind a sweep, recorded on its study (`names.LAUNCH_JOBS_ATTR`) for `harness status`.

The study is opened before `sbatch` runs, as a worker opens it: the same read-only checks first (stores
reachable, the spec still defining the study, its MLflow parent run linked), then created with its
definition and `start_from` entries when it does not exist yet. So a launch whose workers would all fail
on their stores is refused before any job is queued, and the jobs can be recorded the moment they are.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.names import LAUNCH_JOBS_ATTR
from harness.spec import SweepSpec

if TYPE_CHECKING:
    import optuna


def open_launch_study(spec: SweepSpec) -> optuna.Study:
    """The sweep's study, checked as a worker checks it, and created as a worker creates it if none exists."""
    from harness.pruners import make_pruner
    from harness.start_from import load_space
    from harness.study import open_study
    from harness.sweep_stores import check_sweep_stores

    space = load_space(spec)
    check_sweep_stores(spec, space)
    return open_study(spec, space, pruner=make_pruner(spec))


def record_jobs(study: optuna.Study, job_ids: list[str], *, tasks: int, log_dir: Path) -> list[dict[str, Any]]:
    """Append one entry per submitted job (an array is one job of `tasks` tasks) to the study's list; the list."""
    submitted = datetime.now(timezone.utc).isoformat(timespec="seconds")
    entries = [
        {"executor": "slurm", "job_id": job_id, "tasks": tasks, "submitted": submitted, "log_dir": str(log_dir)}
        for job_id in job_ids
    ]
    jobs = [*study.user_attrs.get(LAUNCH_JOBS_ATTR, []), *entries]
    study.set_user_attr(LAUNCH_JOBS_ATTR, jobs)
    return jobs
