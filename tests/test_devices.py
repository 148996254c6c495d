"""Trial slots and worker-job GPU shares: what a scheduler's CUDA_VISIBLE_DEVICES and the GPU count give."""

from __future__ import annotations

import os

import pytest

from harness.devices import default_slots, gpu_shares
from harness.errors import LaunchError


def test_gpu_slots_pin_the_devices_the_scheduler_gave(monkeypatch):
    """One slot per visible GPU; under Slurm's CUDA_VISIBLE_DEVICES=2,3 the slots pin 2 and 3, not 0 and 1.
    The GPU count is what a box with two GPUs reports, whatever this machine has."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert default_slots(None, gpus=2) == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert [s["CUDA_VISIBLE_DEVICES"] for s in default_slots(4, gpus=2)] == ["2", "3", "2", "3"]
    assert default_slots(3, gpus=0) == [{"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // 3))}] * 3


def test_multi_device_trials_get_slots_of_that_many_gpus(monkeypatch):
    """`training.devices: 2` on 4 GPUs: two slots of two, from the scheduler's list; too few GPUs is named."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert default_slots(None, gpus=4, devices=2) == [{"CUDA_VISIBLE_DEVICES": "4,5"}, {"CUDA_VISIBLE_DEVICES": "6,7"}]
    assert [s["CUDA_VISIBLE_DEVICES"] for s in default_slots(None, gpus=3, devices=2)] == ["4,5"]
    with pytest.raises(LaunchError, match=r"`training.devices` is 2, but this machine shows 1 GPU"):
        default_slots(None, gpus=1, devices=2)
    # On CPUs the ranks of one trial share the cores: threads per rank, not per slot; a set OMP_NUM_THREADS wins.
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert default_slots(1, gpus=0, devices=2) == [{"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // 2))}]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_slots(2, gpus=0) == [{"OMP_NUM_THREADS": "3"}] * 2


def test_local_worker_jobs_share_the_schedulers_gpus_without_overlap(monkeypatch):
    """Shares come from CUDA_VISIBLE_DEVICES in order; more than it holds, or UUIDs, are refused by name."""
    monkeypatch.setattr("harness.devices.visible_gpus", lambda: 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,4,5")
    assert gpu_shares(2, 2) == [[2, 3], [4, 5]]
    assert gpu_shares(3, 0) == [[], [], []]  # CPU workers
    with pytest.raises(LaunchError, match="needs 6 GPUs, but this machine shows 4"):
        gpu_shares(3, 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1a2b,GPU-3c4d")
    with pytest.raises(LaunchError, match="names GPUs by UUID"):
        gpu_shares(1, 1)
