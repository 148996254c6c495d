"""The one test hook in product code: `HARNESS_INJECT_FAULT` makes a trial fail the way a GPU trial can.

Crash handling (OOM classification, FAIL records, retries, stopping a sweep whose trials all fail
alike) must be tested through real trial processes, and a CPU cannot run out of GPU memory on
demand. With the variable unset (every real run) `injected_faults()` is empty and nothing here runs.
Values: `oom` raises torch.cuda.OutOfMemoryError at the first training step; anything else raises
a RuntimeError naming it. docs/ARCHITECTURE.md lists this hook.
"""

from __future__ import annotations

import os

import torch
from lightning.pytorch import Callback

FAULT_ENV = "HARNESS_INJECT_FAULT"


class FaultInjector(Callback):
    """Fail at the first training batch, as an OOM or as a plain error."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.kind == "oom":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        raise RuntimeError(f"injected fault {self.kind!r}")


def injected_faults() -> list[Callback]:
    """The trial's fault callbacks: none unless a test set HARNESS_INJECT_FAULT."""
    kind = os.environ.get(FAULT_ENV)
    return [FaultInjector(kind)] if kind else []
