"""A trial's system metrics: CPU, memory and GPU over time on its MLflow run, and its peak memory at the end.

Whether a `batch_duration` fits is a memory question, and whether a trial kept its GPU busy a
utilisation one; both belong beside the trial's params in the MLflow UI. MLflow's
SystemMetricsMonitor samples the machine every 10 s (`MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`
overrides it) as `system/cpu_utilization_percentage`, `system/system_memory_usage_megabytes`,
`system/gpu_0_memory_usage_megabytes`, ... (GPU figures where nvidia-ml-py sees a driver). Only
DDP rank 0, the trial process itself, runs it. Megabytes are 10^6 bytes, as MLflow's own.
"""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Iterator

from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

PEAK_RSS = "peak_rss_mb"
PEAK_GPU = "peak_gpu_memory_mb"
SAMPLING_SECONDS = 10.0
STOP_SECONDS = 30.0  # the monitor's last server call may hang on a dead server; the trial's end must not


@contextlib.contextmanager
def monitored(run_id: str, tracking_uri: str, *, enabled: bool = True) -> Iterator[None]:
    """System metrics on `run_id` while inside. Stopped and flushed on the way out, a crash included: the
    trial process ends with os._exit, which would drop the daemon thread's unsent samples."""
    if not enabled:
        yield
        return
    monitor = _Monitor(run_id, sampling_interval=SAMPLING_SECONDS, tracking_uri=tracking_uri)
    _only_visible_gpus(monitor, os.environ.get("CUDA_VISIBLE_DEVICES"))
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


class _Monitor(SystemMetricsMonitor):
    """MLflow's monitor, except that `finish` logs what was sampled since the last logged step plus one last
    sample (MLflow's drops it: a trial shorter than the interval would log nothing at all), and never
    raises: a trial that trained must not fail because its system metrics could not be sent."""

    def finish(self) -> None:
        thread = getattr(self, "_process", None)  # MLflow's name for its monitoring thread
        if thread is None:
            return
        self._shutdown_event.set()
        thread.join(timeout=STOP_SECONDS)
        if thread.is_alive():
            print(f"harness: system metrics not flushed (monitor still busy after {STOP_SECONDS:.0f} s)", flush=True)
            return
        self._process = None
        try:
            self.collect_metrics()
            self.publish_metrics(self.aggregate_metrics())
            self.mlflow_logger.flush()
        except Exception as exc:  # any store error: the trial's own results are what matter
            print(f"harness: could not log the last system metrics: {exc}", flush=True)


def _only_visible_gpus(monitor: SystemMetricsMonitor, visible: str | None) -> None:
    """NVML lists every GPU of the machine, CUDA_VISIBLE_DEVICES the trial's slot: keep the slot's, in its
    order, so that `system/gpu_0_*` is the trial's cuda:0 and concurrent trials do not each log all GPUs.
    Indices are taken in NVML's (PCI bus) order, which CUDA's matches on a box of one GPU model. An entry
    that names no GPU here (a MIG instance) keeps MLflow's default: every GPU."""
    if not visible:
        return
    wanted = [entry.strip() for entry in visible.split(",") if entry.strip()]
    for gpu in (m for m in monitor.monitors if isinstance(m, GPUMonitor)):
        handles = [_handle(gpu.gpu_handles, entry) for entry in wanted]
        if handles and None not in handles:
            gpu.gpu_handles = handles


def _handle(handles: list, entry: str):
    """The NVML handle CUDA_VISIBLE_DEVICES entry `entry` names: an index or a UUID (prefix), else None."""
    if entry.isdigit():
        return handles[int(entry)] if int(entry) < len(handles) else None
    import pynvml  # GPUMonitor exists only where it imported

    for handle in handles:
        uuid = pynvml.nvmlDeviceGetUUID(handle)
        if (uuid.decode() if isinstance(uuid, bytes) else uuid).startswith(entry):
            return handle
    return None


def peak_memory() -> dict[str, float]:
    """This process's peak resident memory, and on a GPU the most memory torch allocated on any one of its
    devices (the max, not the sum: each device must fit its share; none on CPU). With DDP these are rank
    0's figures."""
    peaks = {PEAK_RSS: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6}  # KiB on Linux
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        allocated = max(torch.cuda.max_memory_allocated(d) for d in range(torch.cuda.device_count()))
        if allocated:  # a CPU trial on a GPU box may have initialised CUDA without using it
            peaks[PEAK_GPU] = allocated / 1e6
    return peaks
