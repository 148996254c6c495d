"""The one test hook in product code: `HARNESS_INJECT_FAULT` makes a trial fail the way a GPU trial can.

Crash handling (OOM classification, FAIL records, retries, stopping a sweep whose trials all fail
alike) must be tested through real trial processes, and a CPU cannot run out of GPU memory on
demand. With the variable unset (every real run) `injected_faults()` is empty and nothing here runs.
Values:
- `oom` raises torch.cuda.OutOfMemoryError at the first training step of every trial;
- `oom_above:<seconds>` raises it only in trials whose `batch_duration` exceeds `<seconds>` (the
  others train normally), as a real GPU does: large batches do not fit, small ones do;
- `oom_rank:<rank>` raises it only on that DDP rank of a multi-device trial (the other ranks train on
  and wait for it), as one GPU of several running out does;
- anything else raises a RuntimeError naming it.
docs/ARCHITECTURE.md lists this hook.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

FAULT_ENV = "HARNESS_INJECT_FAULT"
OOM_ABOVE = "oom_above:"
OOM_RANK = "oom_rank:"


class FaultInjector(Callback):
    """Fail at the first training batch, as an OOM or as a plain error."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.limit = _seconds(kind[len(OOM_ABOVE) :]) if kind.startswith(OOM_ABOVE) else None
        self.rank = _rank(kind[len(OOM_RANK) :]) if kind.startswith(OOM_RANK) else None

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self.rank is not None:
            if trainer.global_rank == self.rank:
                raise _oom(f"rank {self.rank}")
            return
        if self.limit is not None:
            if float(pl_module.cfg.train_ds.batch_duration) > self.limit:
                raise _oom(f"batch_duration above {self.limit:g} s")
            return
        if self.kind == "oom":
            raise _oom("injected")
        raise RuntimeError(f"injected fault {self.kind!r}")


def _oom(why: str) -> torch.cuda.OutOfMemoryError:
    return torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB ({why}, injected)")


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{FAULT_ENV}={OOM_ABOVE}{text}: expected seconds of audio, e.g. {OOM_ABOVE}20") from None


def _rank(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{FAULT_ENV}={OOM_RANK}{text}: expected a DDP rank, e.g. {OOM_RANK}1")
    return int(text)


def injected_faults() -> list[Callback]:
    """The trial's fault callbacks: none unless a test set HARNESS_INJECT_FAULT."""
    kind = os.environ.get(FAULT_ENV)
    return [FaultInjector(kind)] if kind else []
