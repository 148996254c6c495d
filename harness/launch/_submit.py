"""`harness launch`: check the spec's launch settings, then start the worker jobs locally or on Slurm."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from rich.console import Console

from harness.errors import LaunchError
from harness.launch._container import check_container_paths
from harness.launch._jobs import log_dir
from harness.launch._local import run_local
from harness.launch._slurm import check_shared_stores, submit_slurm
from harness.spec import SweepSpec, check_values

INSTALL_HINT = "`harness launch` needs submitit: pip install 'canary-sweep-harness[launch]' (or pip install submitit)"


def import_submitit() -> ModuleType:
    """submitit is an optional extra: imported only by `harness launch`, with the install line when missing."""
    try:
        import submitit
    except ImportError:
        raise LaunchError(INSTALL_HINT + ".") from None
    return submitit


def launch(spec: SweepSpec, *, dry_run: bool, console: Console) -> int:
    """Submit the spec's worker jobs (`spec.launch`, command-line overrides applied); the exit code."""
    where = f"{spec.source} (with the command line's options)"
    check_values(spec, where=where)
    check_worker_gpus(spec, where=where)
    submitit = import_submitit()
    if spec.launch.executor == "slurm":
        check_shared_stores(spec)
        check_container_paths(spec, checkout=Path.cwd(), log_dir=log_dir(spec))
        return submit_slurm(submitit, spec, dry_run=dry_run, console=console)
    return run_local(submitit, spec, dry_run=dry_run, console=console)


def check_worker_gpus(spec: SweepSpec, *, where: str) -> None:
    """A worker job's GPUs hold whole trials (`training.devices` each); checked when launching, so that
    a spec without `launch:` and with `training.devices: 2` still loads for `harness sweep`."""
    per_worker, devices = spec.launch.gpus_per_worker, spec.training.devices
    if per_worker % devices:
        raise LaunchError(
            f"{where}: `launch.gpus_per_worker` is {per_worker}, but each trial takes `training.devices` = "
            f"{devices} GPUs: give each worker a multiple of {devices} (or 0 for CPU workers)."
        )
