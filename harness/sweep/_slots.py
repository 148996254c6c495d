"""Slots: how many trials run at once on this machine, and the environment each one gets."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def visible_gpus() -> int:
    """CUDA devices torch would see, counted in a child process: the supervisor never imports torch
    (it would hold ~450 MiB more for the whole sweep). Without a GPU driver there is nothing to ask."""
    if not (Path("/proc/driver/nvidia/gpus").is_dir() or Path("/dev/kfd").exists() or shutil.which("nvidia-smi")):
        return 0
    probe = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"], capture_output=True, text=True
    )
    return int(probe.stdout.strip() or 0) if probe.returncode == 0 else 0


def default_slots(workers: int | None, *, gpus: int | None = None) -> list[dict[str, str]]:
    """Environment per slot: one per visible GPU (pinned), else `workers` CPU slots sharing the cores.

    A scheduler's own CUDA_VISIBLE_DEVICES (Slurm's `2,3`) is respected: slots pin its entries.
    `gpus` defaults to what this machine has (`visible_gpus()`)."""
    gpus = visible_gpus() if gpus is None else gpus
    count = workers or max(1, gpus)
    if gpus:
        given = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        ids = given[:gpus] if len(given) >= gpus else [str(i) for i in range(gpus)]
        return [{"CUDA_VISIBLE_DEVICES": ids[i % gpus]} for i in range(count)]
    threads = str(max(1, (os.cpu_count() or 1) // count))
    return [{"OMP_NUM_THREADS": threads} for _ in range(count)]
