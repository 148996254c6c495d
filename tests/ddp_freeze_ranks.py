"""Not a test module: `python -m tests.ddp_freeze_ranks <out> <nemo> <train> <validation> <mode>...`, run by
tests/test_ddp.py from the repo root.

One 2-rank DDP process group (gloo; Lightning starts rank 1 as the same command) fine-tunes canary-tiny for a
few steps per freeze mode, a validation in between, with the Trainer and callback a trial uses. Each rank
writes `<mode>.rank<k>.json`: the tensors that changed, the parameters that trained, and a digest of its
parameters, so the test can check both ranks. One process group for every mode saves the start-up of one
per mode (imports, restore, rank launch).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback

from harness.canary import inspect_checkpoint, trial_config
from harness.freezing import FreezeCallback
from harness.spec import BudgetSpec, DataSpec, TrainingSpec
from harness.training import build_trainer, restore_model

STEPS, VALIDATE_EVERY = 4, 2


def _tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers (BatchNorm statistics) by name; the output head, which shares the decoder
    embedding's weight, is one parameter under the embedding's name."""
    return {name: t.detach().clone() for name, t in [*model.named_parameters(), *model.named_buffers()]}


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> list[str]:
    return sorted(k for k, v in before.items() if not torch.equal(v, after[k]))


def _digest(model: torch.nn.Module) -> str:
    """The parameters' values: equal on every rank when DDP kept the replicas in step."""
    sha = hashlib.sha256()
    for _, param in sorted(model.named_parameters()):
        sha.update(param.detach().cpu().numpy().tobytes())
    return sha.hexdigest()


class Validations(Callback):
    """Counts validations: after each one `FreezeCallback` re-applies the mode inside the DDP wrap."""

    def __init__(self) -> None:
        self.count = 0

    def on_validation_end(self, trainer, pl_module) -> None:
        self.count += 1


def train_mode(out: Path, nemo: Path, data: DataSpec, mode: str) -> None:
    """A few DDP steps in one freeze mode; this rank's record of what moved."""
    training = TrainingSpec(accelerator="cpu", devices=2, validation_batch_size=8)
    budget = BudgetSpec(max_steps=STEPS, val_check_interval=VALIDATE_EVERY, warmup_fraction=0.25)
    params = {"lr": 3e-3, "batch_duration": 10, "freeze": mode}
    cfg = trial_config(inspect_checkpoint(nemo).config, params, data=data, training=training, budget=budget, seed=0)
    validations = Validations()
    callbacks = [FreezeCallback(mode), validations]
    trainer = build_trainer(training, max_steps=STEPS, val_check_interval=VALIDATE_EVERY, callbacks=callbacks)
    model = restore_model(nemo, cfg, trainer)
    before = _tensors(model)
    trainer.fit(model)
    record = {
        "steps": trainer.global_step,
        "validations": validations.count,
        "changed": _changed(before, _tensors(model)),
        "trainable": sorted(n for n, p in model.named_parameters() if p.requires_grad),
        "digest": _digest(model),
    }
    (out / f"{mode}.rank{trainer.global_rank}.json").write_text(json.dumps(record))


def main(argv: list[str]) -> None:
    out, nemo, train, validation, *modes = argv
    data = DataSpec(train=train, validation=validation)
    for mode in modes:
        train_mode(Path(out), Path(nemo), data, mode)


if __name__ == "__main__":
    main(sys.argv[1:])
