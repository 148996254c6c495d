"""Worker jobs on Slurm: the `sbatch` parameters (job array, pyxis container, requeue), submission, the dry run.

Before `sbatch`: the request is checked against the partition (`_partition`), the container against the paths
the job needs (`_container`, also in a dry run), and the study is opened as a worker would (`_record`), so a
launch that could never run is one line, not jobs pending or failing on the cluster. After: the jobs are
recorded on the study for `harness status`.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from types import ModuleType

from rich.console import Console

from harness.errors import LaunchError
from harness.launch._jobs import STOP_WARNING_SECONDS, WorkerCommand, log_dir, run_worker, worker_command
from harness.launch._partition import check_request, read_partition, require_slurm_commands, worker_cpus
from harness.launch._record import open_launch_study, record_jobs
from harness.spec import SweepSpec


def check_shared_stores(spec: SweepSpec) -> None:
    """Slurm workers run on other hosts: they share the study and the runs only through servers."""
    from harness.stores import STORAGE_SETTING, TRACKING_SETTING, redact

    if spec.storage_url.startswith("sqlite"):
        raise LaunchError(
            f"Slurm workers run on other hosts and cannot share the SQLite study {redact(spec.storage_url)}: "
            f"set {STORAGE_SETTING} to a PostgreSQL or MySQL URL (README, 'Many workers')."
        )
    if not spec.tracking_uri.startswith(("http://", "https://")):
        raise LaunchError(
            f"Slurm workers run on other hosts and cannot share the MLflow store {redact(spec.tracking_uri)}: "
            f"set {TRACKING_SETTING} to an MLflow server, e.g. http://mlflow-host:5000 (README, 'Many workers')."
        )


def slurm_parameters(spec: SweepSpec, command: WorkerCommand, *, cpus: int) -> dict:
    """`SlurmExecutor.update_parameters` keywords: one task per job, `cpus` CPUs and `gpus_per_worker` GPUs on
    its node; `--requeue` (`launch.requeue`) lets Slurm restart a preempted job, whose worker resumes the study.

    `env` and `setup` become the script's lines before `srun` (srun passes the environment on, into a
    pyxis container too); the container is `srun --container-image` (pyxis/enroot). The script's
    `srun` runs submitit's pickled call, so a comment line says what that call runs."""
    launch = spec.launch
    srun_args = []
    if launch.container_image:
        srun_args.append(f"--container-image={launch.container_image}")
        if launch.container_mounts:
            srun_args.append("--container-mounts=" + ",".join(launch.container_mounts))
    setup = [f"# each task runs `harness worker`, in Python: {command.text}".replace("\n", " ")]
    setup += [f"export {name}={shlex.quote(value)}" for name, value in launch.env.items()] + launch.setup
    parameters = {
        "job_name": f"harness-{spec.name}",
        "time": launch.time_minutes,
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": cpus,
        "gpus_per_node": launch.gpus_per_worker or None,
        "mem": f"{launch.mem_gb}GB" if launch.mem_gb else None,
        "partition": launch.partition,
        "account": launch.account,
        "qos": launch.qos,
        "setup": setup,
        "srun_args": srun_args or None,
        "stderr_to_stdout": True,  # one log per worker
        "signal_delay_s": STOP_WARNING_SECONDS,
        "additional_parameters": {"requeue" if launch.requeue else "no-requeue": True},
    }
    return {key: value for key, value in parameters.items() if value is not None}


def _slurm_python(spec: SweepSpec) -> str:
    """The interpreter on the nodes: `launch.python`, else `python` inside a container, else this one
    (a shared checkout and virtual environment at the same path, as the README's recipe assumes)."""
    if spec.launch.python:
        return spec.launch.python
    return "python" if spec.launch.container_image else shlex.quote(sys.executable)


def submit_slurm(submitit: ModuleType, spec: SweepSpec, *, dry_run: bool, console: Console) -> int:
    """Submit the worker jobs with `sbatch` (or print the script: `dry_run`); they run on while this returns."""
    launch, folder, python = spec.launch, log_dir(spec), _slurm_python(spec)
    command = worker_command(spec, gpus=launch.gpus_per_worker, python=python)
    if dry_run:
        return _slurm_dry_run(submitit, spec, folder, command)
    require_slurm_commands()
    partition = read_partition(launch.partition)
    cpus = worker_cpus(spec, partition)
    check_request(spec, partition, cpus=cpus)
    study = open_launch_study(spec)
    executor = submitit.SlurmExecutor(folder=folder, python=python)
    executor.update_parameters(**slurm_parameters(spec, command, cpus=cpus))
    count, args = launch.workers, (command.argv, command.cwd, command.text)
    try:
        if launch.array:
            jobs = executor.map_array(run_worker, *([arg] * count for arg in args))
        else:
            jobs = [executor.submit(run_worker, *args) for _ in range(count)]
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError) as exc:
        raise LaunchError(f"sbatch refused the job: {str(exc).strip().splitlines()[-1]}") from None
    job_ids = list(dict.fromkeys(job.job_id.split("_")[0] for job in jobs))  # an array's tasks share its id
    record_jobs(study, job_ids, tasks=count if launch.array else 1, log_dir=folder)
    _print_submitted(spec, jobs, job_ids, command, partition=partition.name, cpus=cpus, console=console)
    return 0


def _print_submitted(
    spec: SweepSpec,
    jobs: list,
    job_ids: list[str],
    command: WorkerCommand,
    *,
    partition: str,
    cpus: int,
    console: Console,
) -> None:
    """What was queued where, each task's log, and how to follow and stop the jobs."""
    launch = spec.launch
    unset = "" if launch.cpus_per_worker is not None else " (`launch.cpus_per_worker` unset)"
    console.print(
        f"Submitted {launch.workers} worker job(s) for sweep {spec.name} to partition {partition}, "
        f"{cpus} CPUs{unset} and {launch.gpus_per_worker} GPUs each:",
        highlight=False,
    )
    for job in jobs:
        console.print(f"  job {job.job_id}  log {job.paths.stdout}", highlight=False)
    console.print(f"Each runs: {command.text}", highlight=False, markup=False, soft_wrap=True)
    console.print(
        f"Logs: {log_dir(spec)}. Follow with `harness status {spec.name}`, `squeue --me` or the MLflow UI; "
        f"stop with `scancel {' '.join(job_ids)}` (workers record the stop and re-queue their trials).",
        highlight=False,
    )


def _slurm_dry_run(submitit: ModuleType, spec: SweepSpec, folder: Path, command: WorkerCommand) -> int:
    """Print what `sbatch` would get, written by submitit itself, without sbatch: nothing is written or submitted.

    submitit has no public "render the script" call. This uses the least private path: the executor's
    own `_make_submission_file_text` with its `_submitit_command_str`, i.e. what `submit` writes to the
    file it hands to sbatch; `map_count` is the key submitit sets on its array executor for `map_array`.
    SlurmExecutor refuses to start without `srun` (`affinity`), which a subclass answers for a dry run."""

    class OfflineSlurmExecutor(submitit.SlurmExecutor):  # type: ignore[name-defined]  # an optional import
        @classmethod
        def affinity(cls) -> int:
            return 2

    launch = spec.launch
    executor = OfflineSlurmExecutor(folder=folder, python=command.python)
    executor.update_parameters(**slurm_parameters(spec, command, cpus=worker_cpus(spec, None)))
    as_array = launch.array and launch.workers > 1
    if as_array:
        executor.parameters["map_count"] = launch.workers
    script = executor._make_submission_file_text(executor._submitit_command_str, "dry-run")
    scripts = 1 if as_array or launch.workers == 1 else launch.workers
    what = f"one job array of {launch.workers} tasks" if as_array else f"{scripts} job(s)"
    print(f"# harness launch --dry-run: sbatch would get {what}; nothing was written or submitted.")
    if launch.cpus_per_worker is None:
        print("# `launch.cpus_per_worker` is unset: a submit asks for 8 CPUs, or a node's CPUs where nodes have fewer.")
    for index in range(scripts):
        print(f"# ---- sbatch script {index + 1} of {scripts} ----")
        print(script)
    print(f"# logs: {folder}")
    return 0
