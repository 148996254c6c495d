"""The timing probe: stamps a child process's start-up and training without editing the code it runs.

Why a probe: the harness trial (`python -m harness.trial`) must be measured exactly as a sweep runs it,
without editing it. A generated `sitecustomize.py` (`SITECUSTOMIZE`), active only in child processes that
get `BENCH_PROBE_DIR`, hooks the first import of torch, Lightning and NeMo and records wall-clock stamps
(process start, imports, Trainer, restore, dataloaders, first training batch, end of training), training
audio seconds and peak RSS into `<dir>/probe-<pid>.json`. The harness trial and the bare flow are thus
instrumented identically, and the harness code under test runs unmodified.

Only the standard library is imported at module level: the probe loads this module in every child
process before anything else, and must not change what it measures.
"""

from __future__ import annotations

import atexit
import functools
import importlib.abc
import importlib.machinery
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROBE_ENV = "BENCH_PROBE_DIR"
SITECUSTOMIZE = (
    f"import os\nif os.environ.get({PROBE_ENV!r}):\n    import benchmarks.probe\n    benchmarks.probe.install_probe()\n"
)


class _Probe:
    """Stamps and counters of one child process, written to `probe-<pid>.json` at exit."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / f"probe-{os.getpid()}.json"
        self.stamps: dict[str, float] = {"spawned": _process_start_time(), "python": time.time()}
        self.counters: dict[str, float] = {
            "steps": 0,
            "audio_seconds": 0.0,
            "validations": 0,
            "validation_seconds": 0.0,
        }
        self.metrics: dict[str, float] = {}

    def stamp(self, name: str) -> None:
        """Record the first time a point is reached (later repeats, e.g. re-validation, are not startup)."""
        self.stamps.setdefault(name, time.time())

    def write(self) -> None:
        self.stamp("exit")
        data = {
            "stamps": self.stamps,
            "counters": self.counters,
            "metrics": self.metrics,
            "peak_rss_mib": status_mib("VmHWM"),
        }
        self.path.write_text(json.dumps(data, indent=1))


class _ImportHooks(importlib.abc.MetaPathFinder):
    """Run `before()` / `after(module)` around the first execution of chosen modules."""

    def __init__(self, hooks: dict[str, tuple[Callable[[], None] | None, Callable[[Any], None] | None]]) -> None:
        self.hooks = dict(hooks)

    def find_spec(self, name, path, target=None):
        if name not in self.hooks:
            return None
        before, after = self.hooks.pop(name)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        exec_module = spec.loader.exec_module

        def run(module) -> None:
            if before:
                before()
            exec_module(module)
            if after:
                after(module)

        spec.loader.exec_module = run
        return spec


def install_probe() -> None:
    """Called from the generated sitecustomize.py: stamp this process and hook its heavy imports."""
    probe = _Probe(Path(os.environ[PROBE_ENV]))
    atexit.register(probe.write)
    hooks = _ImportHooks(
        {
            "torch": (lambda: probe.stamp("torch_start"), None),
            "lightning.pytorch": (None, lambda module: probe.stamp("lightning_done")),
            "lightning.pytorch.trainer.trainer": (None, lambda module: _patch_trainer(module.Trainer, probe)),
            "nemo": (lambda: probe.stamp("nemo_start"), None),
            "nemo.collections.asr.models": (None, lambda module: _patch_model(module.EncDecMultiTaskModel, probe)),
        }
    )
    sys.meta_path.insert(0, hooks)


def _stamped(method: Callable, probe: _Probe, before: str | None, after: str | None) -> Callable:
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        if before:
            probe.stamp(before)
        out = method(*args, **kwargs)
        if after:
            probe.stamp(after)
        return out

    return wrapper


def _patch_model(cls, probe: _Probe) -> None:
    """Restore and dataloader setup, the two NeMo calls both flows make before `fit`."""
    cls.restore_from = classmethod(_stamped(cls.restore_from.__func__, probe, "restore_start", "restore_done"))
    cls.setup_training_data = _stamped(cls.setup_training_data, probe, None, "train_data_done")
    cls.setup_validation_data = _stamped(cls.setup_validation_data, probe, None, "val_data_done")


def _stamps_callback(probe: _Probe) -> type:
    """A Lightning callback class that stamps the first batch and the end of training and counts steps,
    audio seconds and validations (built once the Trainer module is imported, so Lightning is loaded)."""
    from lightning.pytorch.callbacks import Callback

    class Stamps(Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            probe.stamp("train_start")

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            probe.stamp("first_batch")
            probe.counters["steps"] += 1
            probe.counters["audio_seconds"] += float(batch.audio_lens.sum()) / pl_module.cfg.get("sample_rate", 16000)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            probe.stamp("first_step_done")

        def on_validation_start(self, trainer, pl_module) -> None:
            self.validation_started = time.time()

        def on_validation_end(self, trainer, pl_module) -> None:
            probe.counters["validations"] += 1
            probe.counters["validation_seconds"] += time.time() - self.validation_started

        def on_train_end(self, trainer, pl_module) -> None:
            probe.stamp("train_end")
            for key, value in trainer.callback_metrics.items():
                if key.startswith("val_"):
                    probe.metrics[key] = float(value)

    return Stamps


def _patch_trainer(trainer_cls, probe: _Probe) -> None:
    """Every Trainer gets the stamping callback, and its construction is stamped."""
    stamps = _stamps_callback(probe)
    init = trainer_cls.__init__

    @functools.wraps(init)
    def patched_init(self, *args, **kwargs) -> None:
        probe.stamp("trainer_start")
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), stamps()]
        init(self, *args, **kwargs)
        probe.stamp("trainer_done")

    trainer_cls.__init__ = patched_init


def _process_start_time() -> float:
    """Wall-clock time at which this process was forked (from /proc), so interpreter start-up is counted."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time, ticks since boot
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - (uptime - started)
    except (OSError, ValueError, IndexError):
        return time.time()


def status_mib(key: str, pid: int | str = "self") -> float:
    """VmRSS / VmHWM of a process in MiB (Linux /proc; psutil is not a dependency)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")
