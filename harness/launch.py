"""`harness launch`: submit N `harness worker` jobs that join one shared study, through submitit.

The launcher is submitit (pure Python; cloudpickle and typing_extensions), an optional extra
(`pip install 'canary-sweep-harness[launch]'`). NeMo-Run was evaluated and cannot serve: nemo-run
0.11.1 does not resolve next to nemo_toolkit 3.0 (torchx 0.7 pins urllib3<1.27, NeMo's aistore needs
urllib3>=2.8; virtualenv's packaging>=26.3 against lightning's packaging<25), and installed alone it
fails to import (leptonai 0.47 lacks `leptonai.api.v1`).

Every job runs `run_worker`: `harness worker SPEC --storage URL --tracking-uri URI` in the job's own
Python process (submitit pickles the call into the log folder), so the job's log is the worker's
output, a stop (SIGTERM, Ctrl-C, the time limit) is recorded by the worker as it always is, and a
worker that exits non-zero fails its job. `local` runs the jobs here and waits (`harness.launch_local`);
`slurm` submits them and returns: the study and MLflow show the progress.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from rich.console import Console

from harness.errors import HarnessError
from harness.spec import STATE_DIR, SweepSpec
from harness.spec_values import check_values

INSTALL_HINT = "`harness launch` needs submitit: pip install 'canary-sweep-harness[launch]' (or pip install submitit)"
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

        return f"cd {shlex.quote(self.cwd)} && {self.python} -m harness.cli " + shlex.join(map(redact, self.argv))


def run_worker(argv: list[str], cwd: str, text: str) -> int:
    """The function each job runs (pickled by reference: the job's Python must import this harness).

    submitit's job process ignores SIGTERM and turns its time-limit warning (SIGUSR2) into a requeue,
    and a local job starts with SIGINT ignored (see `launch_local`). The worker wants its own: Ctrl-C
    and SIGTERM stop and record as for `harness worker`, and the warning becomes a SIGTERM, so the
    worker stops cleanly, its trial re-queued for the others, before the scheduler kills it."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGUSR2, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
    os.chdir(cwd)
    print(f"harness launch: this job runs `{text}`", flush=True)
    from harness.cli import main

    code = main(argv)
    if code:
        raise WorkerFailed(f"harness worker exited with {code}")
    return code


def import_submitit() -> ModuleType:
    """submitit is an optional extra: imported only by `harness launch`, with the install line when missing."""
    try:
        import submitit
    except ImportError:
        raise HarnessError(INSTALL_HINT + ".") from None
    return submitit


def launch(spec: SweepSpec, *, dry_run: bool, console: Console) -> int:
    """Submit the spec's worker jobs (`spec.launch`, command-line overrides applied); the exit code."""
    where = f"{spec.source} (with the command line's options)"
    check_values(spec, where=where)
    check_worker_gpus(spec, where=where)
    submitit = import_submitit()
    if spec.launch.executor == "slurm":
        check_shared_stores(spec)
        return _slurm(submitit, spec, dry_run=dry_run, console=console)
    from harness.launch_local import run_local

    return run_local(submitit, spec, dry_run=dry_run, console=console)


def check_worker_gpus(spec: SweepSpec, *, where: str) -> None:
    """A worker job's GPUs hold whole trials (`training.devices` each); checked when launching, so that
    a spec without `launch:` and with `training.devices: 2` still loads for `harness sweep`."""
    per_worker, devices = spec.launch.gpus_per_worker, spec.training.devices
    if per_worker % devices:
        raise HarnessError(
            f"{where}: `launch.gpus_per_worker` is {per_worker}, but each trial takes `training.devices` = "
            f"{devices} GPUs: give each worker a multiple of {devices} (or 0 for CPU workers)."
        )


def check_shared_stores(spec: SweepSpec) -> None:
    """Slurm workers run on other hosts: they share the study and the runs only through servers."""
    from harness.stores import STORAGE_SETTING, TRACKING_SETTING, redact

    if spec.storage_url.startswith("sqlite"):
        raise HarnessError(
            f"Slurm workers run on other hosts and cannot share the SQLite study {redact(spec.storage_url)}: "
            f"set {STORAGE_SETTING} to a PostgreSQL or MySQL URL (README, 'Many workers')."
        )
    if not spec.tracking_uri.startswith(("http://", "https://")):
        raise HarnessError(
            f"Slurm workers run on other hosts and cannot share the MLflow store {redact(spec.tracking_uri)}: "
            f"set {TRACKING_SETTING} to an MLflow server, e.g. http://mlflow-host:5000 (README, 'Many workers')."
        )


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


def _slurm(submitit: ModuleType, spec: SweepSpec, *, dry_run: bool, console: Console) -> int:
    launch, folder, python = spec.launch, log_dir(spec), _slurm_python(spec)
    command = worker_command(spec, gpus=launch.gpus_per_worker, python=python)
    if dry_run:
        return _slurm_dry_run(submitit, spec, folder, command)
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise HarnessError(
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
        raise HarnessError(f"sbatch refused the job: {str(exc).strip().splitlines()[-1]}") from None
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
