"""This machine's GPUs and how they are shared: trial slots (the supervisor) and worker jobs (`harness launch`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from harness.errors import LaunchError


def visible_gpus() -> int:
    """CUDA devices torch would see, counted in a child process: the supervisor never imports torch
    (it would hold ~450 MiB more for the whole sweep). Without a GPU driver there is nothing to ask."""
    if not (Path("/proc/driver/nvidia/gpus").is_dir() or Path("/dev/kfd").exists() or shutil.which("nvidia-smi")):
        return 0
    probe = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"], capture_output=True, text=True
    )
    return int(probe.stdout.strip() or 0) if probe.returncode == 0 else 0


def _given() -> list[str]:
    """The entries of a scheduler's CUDA_VISIBLE_DEVICES (Slurm's `2,3`); empty when unset."""
    return [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]


def default_slots(workers: int | None, *, gpus: int | None = None, devices: int = 1) -> list[dict[str, str]]:
    """Environment per slot: `devices` GPUs each (pinned), else `workers` CPU slots sharing the cores
    (OMP_NUM_THREADS: the cores split between slots and ranks, unless already set).

    A scheduler's own CUDA_VISIBLE_DEVICES (Slurm's `2,3`) is respected: slots pin its entries.
    `gpus` defaults to what this machine has (`visible_gpus()`); `devices` is GPUs per trial."""
    gpus = visible_gpus() if gpus is None else gpus
    if gpus:
        given = _given()
        ids = given[:gpus] if len(given) >= gpus else [str(i) for i in range(gpus)]
        groups = [ids[i : i + devices] for i in range(0, len(ids) - devices + 1, devices)]
        if not groups:
            raise LaunchError(
                f"`training.devices` is {devices}, but this machine shows {gpus} GPU(s) "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): lower `training.devices` "
                "or run on a machine with that many GPUs."
            )
        count = workers or len(groups)
        return [{"CUDA_VISIBLE_DEVICES": ",".join(groups[i % len(groups)])} for i in range(count)]
    count = workers or 1
    # A user's (or scheduler's) OMP_NUM_THREADS wins: it knows what else shares the cores.
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // (count * devices)))
    return [{"OMP_NUM_THREADS": threads} for _ in range(count)]


def gpu_shares(workers: int, per_worker: int) -> list[list[int]]:
    """Each local worker job's GPU indices, distinct; empty lists on a machine without GPUs (CPU workers).

    A scheduler's CUDA_VISIBLE_DEVICES (`2,3`) is the pool the shares come from."""
    total = visible_gpus() if per_worker else 0
    if not total:
        return [[] for _ in range(workers)]
    given = _given()
    if not all(d.isdigit() for d in given):
        raise LaunchError(
            f"CUDA_VISIBLE_DEVICES={','.join(given)} names GPUs by UUID, but local jobs are given GPU indices: "
            "set it to indices (e.g. 0,1), or run `harness sweep` here (one trial per GPU)."
        )
    pool = [int(d) for d in given[:total]] if given else list(range(total))
    if workers * per_worker > len(pool):
        raise LaunchError(
            f"`launch.workers` ({workers}) x `launch.gpus_per_worker` ({per_worker}) needs {workers * per_worker} "
            f"GPUs, but this machine shows {len(pool)}: lower either (or --workers / --gpus-per-worker)."
        )
    return [pool[i * per_worker : (i + 1) * per_worker] for i in range(workers)]
