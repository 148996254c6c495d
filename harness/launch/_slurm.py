"""Worker jobs on Slurm: the `sbatch` parameters (job array, pyxis container), submission, the dry run's script."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path
from types import ModuleType

from rich.console import Console

from harness.errors import LaunchError
from harness.launch._jobs import STOP_WARNING_SECONDS, WorkerCommand, log_dir, run_worker, worker_command
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


def slurm_parameters(spec: SweepSpec, command: WorkerCommand) -> dict:
    """`SlurmExecutor.update_parameters` keywords: one task per job, `gpus_per_worker` GPUs on its node.

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
        "cpus_per_task": launch.cpus_per_worker,
        "gpus_per_node": launch.gpus_per_worker or None,
        "mem": f"{launch.mem_gb}GB" if launch.mem_gb else None,
        "partition": launch.partition,
        "account": launch.account,
        "qos": launch.qos,
        "setup": setup,
        "srun_args": srun_args or None,
        "stderr_to_stdout": True,  # one log per worker
        "signal_delay_s": STOP_WARNING_SECONDS,
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
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise LaunchError(
            "No `sbatch`/`srun` on this machine: run `harness launch` on a Slurm login node "
            "(`harness launch --dry-run` prints the job script anywhere)."
        )
    executor = submitit.SlurmExecutor(folder=folder, python=python)
    executor.update_parameters(**slurm_parameters(spec, command))
    count, args = launch.workers, (command.argv, command.cwd, command.text)
    try:
        if launch.array:
            jobs = executor.map_array(run_worker, *([arg] * count for arg in args))
        else:
            jobs = [executor.submit(run_worker, *args) for _ in range(count)]
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError) as exc:
        raise LaunchError(f"sbatch refused the job: {str(exc).strip().splitlines()[-1]}") from None
    console.print(f"Submitted {count} worker job(s) for sweep {spec.name}:", highlight=False)
    for job in jobs:
        console.print(f"  job {job.job_id}  log {job.paths.stdout}", highlight=False)
    console.print(f"Each runs: {command.text}", highlight=False, markup=False, soft_wrap=True)
    main_id = jobs[0].job_id.split("_")[0]
    console.print(
        f"Logs: {folder}. Follow with `squeue --me`, `harness report {spec.name}` or the MLflow UI; "
        f"stop with `scancel {main_id if launch.array else ' '.join(j.job_id for j in jobs)}` "
        "(workers record the stop and re-queue their trials).",
        highlight=False,
    )
    return 0


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
    executor.update_parameters(**slurm_parameters(spec, command))
    as_array = launch.array and launch.workers > 1
    if as_array:
        executor.parameters["map_count"] = launch.workers
    script = executor._make_submission_file_text(executor._submitit_command_str, "dry-run")
    scripts = 1 if as_array or launch.workers == 1 else launch.workers
    what = f"one job array of {launch.workers} tasks" if as_array else f"{scripts} job(s)"
    print(f"# harness launch --dry-run: sbatch would get {what}; nothing was written or submitted.")
    for index in range(scripts):
        print(f"# ---- sbatch script {index + 1} of {scripts} ----")
        print(script)
    print(f"# logs: {folder}")
    return 0
