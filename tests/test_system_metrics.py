"""harness.system_metrics: a trial's system metrics reach its run however short it is, GPUs are the slot's, peaks.

A real SQLite MLflow store; no training (the shared sweep in test_sweep.py checks real trials' runs).
"""

from __future__ import annotations

import resource
import sys
import threading
import time
import types

import pytest
from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor

from harness import system_metrics
from harness.system_metrics import PEAK_GPU, PEAK_RSS, monitored, peak_memory
from harness.tracking import Tracker


@pytest.fixture(scope="module")
def tracker(tmp_path_factory) -> Tracker:
    """One store for the module (making an MLflow schema takes seconds); each test gets its own run."""
    return Tracker(f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}", "metrics")


@pytest.fixture
def run(tracker) -> tuple[Tracker, str]:
    return tracker, tracker.client.create_run(tracker.experiment_id).info.run_id


def test_a_process_shorter_than_the_interval_still_logs_a_sample_and_the_thread_is_gone(run):
    tracker, run_id = run
    with monitored(run_id, tracker.uri):  # the default interval is 10 s: MLflow's monitor alone logs nothing
        pass
    metrics = tracker.client.get_run(run_id).data.metrics
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(metrics)
    assert metrics["system/system_memory_usage_megabytes"] > 0
    assert "SystemMetricsMonitor" not in {t.name for t in threading.enumerate()}


def test_samples_are_logged_while_inside_and_a_crash_still_flushes(run, monkeypatch):
    tracker, run_id = run
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")  # MLflow's own override
    with pytest.raises(RuntimeError, match="crash"), monitored(run_id, tracker.uri):
        time.sleep(1.5)
        raise RuntimeError("crash")
    steps = [m.step for m in tracker.client.get_metric_history(run_id, "system/cpu_utilization_percentage")]
    assert len(steps) >= 3 and steps == sorted(set(steps))  # the loop's samples, then the last one


def test_disabled_monitors_nothing(run):
    tracker, run_id = run
    with monitored(run_id, tracker.uri, enabled=False):
        pass
    assert tracker.client.get_run(run_id).data.metrics == {}


def test_an_unreachable_store_at_the_end_does_not_fail_the_trial(run, monkeypatch, capsys):
    tracker, run_id = run

    def refuse(*args, **kwargs):
        raise OSError("store gone")

    with monitored(run_id, tracker.uri):
        monkeypatch.setattr(system_metrics._Monitor, "publish_metrics", refuse)
    assert "could not log the last system metrics: store gone" in capsys.readouterr().out


def _gpus(count: int) -> GPUMonitor:
    """A GPUMonitor over `count` stand-in NVML handles (no driver needed)."""
    gpu = GPUMonitor.__new__(GPUMonitor)
    gpu.gpu_handles = [f"handle-{i}" for i in range(count)]
    return gpu


def test_only_the_slots_gpus_are_monitored_in_the_slots_order(monkeypatch):
    uuids = {"handle-0": "GPU-aaaa-0", "handle-1": b"GPU-bbbb-1", "handle-2": "GPU-cccc-2"}
    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlDeviceGetUUID=uuids.__getitem__))
    cases = {
        None: ["handle-0", "handle-1", "handle-2"],
        "2,1": ["handle-2", "handle-1"],
        "GPU-cccc,GPU-aaaa-0": ["handle-2", "handle-0"],
        "GPU-bbbb": ["handle-1"],
        "7": ["handle-0", "handle-1", "handle-2"],  # names no GPU here: MLflow's default, all of them
        "MIG-1234": ["handle-0", "handle-1", "handle-2"],
    }
    for visible, expected in cases.items():
        gpu = _gpus(3)
        monitor = types.SimpleNamespace(monitors=[object(), gpu])
        system_metrics._only_visible_gpus(monitor, visible)
        assert gpu.gpu_handles == expected, visible


def test_peak_memory_is_this_processes_resident_peak_and_no_gpu_figure_on_cpu():
    def max_rss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6  # KiB on Linux

    before = max_rss_mb()
    peaks = peak_memory()
    assert before <= peaks[PEAK_RSS] <= max_rss_mb()
    assert peaks[PEAK_RSS] > 10  # a Python process with MLflow imported holds tens of MB at least
    import torch

    assert (PEAK_GPU in peaks) == (torch.cuda.is_initialized() and torch.cuda.max_memory_allocated() > 0)
