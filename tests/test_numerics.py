"""A trial's numerics fingerprint: which differences change figures, which a reproduction re-creates, and what
the probe of this machine reads."""

from __future__ import annotations

import os
from dataclasses import replace

from harness.numerics import (
    Numerics,
    cannot_recreate,
    differences,
    figure_changes,
    probe,
    recreate_env,
    unrepeatable,
)
from harness.spec import TrainingSpec
from tests.helpers import CPU_TRIAL, VERSIONS

GPU_TRIAL = replace(CPU_TRIAL, device="NVIDIA H200", accelerator="auto", precision="bf16-mixed", threads=16)


def test_a_cpu_trial_names_the_differences_that_change_its_figures():
    """Reproduced with two threads and another torch: threads change figures (reproduce re-creates them), the
    thread variable alone does not, torch does and cannot be re-created; GPU-only flags do not matter on a CPU."""
    here = replace(
        CPU_TRIAL,
        threads=2,
        omp_num_threads="2",
        cudnn_benchmark=True,
        versions={**VERSIONS, "torch": "2.6.0"},
    )
    found = {d.name: d for d in differences(CPU_TRIAL, here)}
    assert set(found) == {"threads", "omp_num_threads", "cudnn_benchmark", "versions.torch"}
    assert found["threads"].changes_figures and found["threads"].recreated
    assert not found["omp_num_threads"].changes_figures
    assert not found["cudnn_benchmark"].changes_figures  # no cuDNN on a CPU
    assert found["versions.torch"].changes_figures and not found["versions.torch"].recreated
    assert cannot_recreate(CPU_TRIAL, here) == ["versions.torch 2.5.1 -> 2.6.0"]
    assert figure_changes(CPU_TRIAL, here) == ["threads 1 -> 2", "versions.torch 2.5.1 -> 2.6.0"]
    assert cannot_recreate(CPU_TRIAL, CPU_TRIAL) == [] and unrepeatable(CPU_TRIAL) is None
    assert cannot_recreate(CPU_TRIAL, replace(CPU_TRIAL, device="NVIDIA H200")) == ["device cpu -> NVIDIA H200"]


def test_a_gpu_trial_without_deterministic_algorithms_cannot_be_repeated_exactly():
    """On a GPU the deterministic settings change figures and threads do not; without Lightning's
    `deterministic` even the same GPU gives other figures, and under DDP NCCL's all-reduce order is named."""
    here = replace(GPU_TRIAL, threads=8, cudnn_benchmark=True)
    found = {d.name: d for d in differences(GPU_TRIAL, here)}
    assert not found["threads"].changes_figures and found["cudnn_benchmark"].changes_figures
    reason = unrepeatable(GPU_TRIAL)
    assert reason is not None and "without deterministic algorithms" in reason and "NCCL" not in reason
    assert cannot_recreate(GPU_TRIAL, GPU_TRIAL) == [reason]
    assert "NCCL all-reduce order" in str(unrepeatable(replace(GPU_TRIAL, devices=2)))
    deterministic = replace(GPU_TRIAL, deterministic=True, cublas_workspace_config=":4096:8")
    assert unrepeatable(deterministic) is None and cannot_recreate(deterministic, deterministic) == []


def test_a_stored_fingerprint_reads_back_and_an_older_record_reads_as_none():
    assert Numerics.of(CPU_TRIAL.as_dict()) == CPU_TRIAL
    assert Numerics.of({**CPU_TRIAL.as_dict(), "a_later_field": 1}) == CPU_TRIAL  # a newer harness's record
    assert Numerics.of({}) is None and Numerics.of(None) is None  # recorded before numerics were
    assert Numerics.of({"threads": 1}) is None
    # A reproduction's thread variables: torch's count as OMP_NUM_THREADS, MKL's as recorded (unset: removed).
    assert recreate_env(CPU_TRIAL) == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": None}


def test_the_probe_reads_the_threads_a_trial_process_would_use_under_an_environment():
    """The child process the supervisor asks (it never imports torch): a one-thread slot gives torch one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MKL_NUM_THREADS", None)
    found = probe(TrainingSpec(accelerator="cpu", precision="auto"), 7, env)
    assert found is not None
    assert (found.threads, found.omp_num_threads, found.mkl_num_threads) == (1, "1", None)
    assert (found.device, found.precision, found.seed, found.deterministic) == ("cpu", "32-true", 7, False)
    assert set(found.versions) == {"torch", "nemo_toolkit", "lightning", "numpy"}
