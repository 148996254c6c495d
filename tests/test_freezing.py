"""Freezing modes: after real training steps (with a validation in between), exactly the
expected tensors of the tiny twin changed."""

import pytest
import torch

from harness.canary import inspect_checkpoint, trial_config
from harness.freezing import FreezeCallback, is_bn_or_se
from harness.spec import BudgetSpec, DataSpec, TrainingSpec
from harness.training import build_trainer, restore_model


def _bn_tensor_names(model) -> set[str]:
    """Parameters and buffers (running stats) of every BatchNorm/SE layer."""
    names = set()
    for prefix, module in model.named_modules():
        if is_bn_or_se(module):
            names |= {f"{prefix}.{n}" for n, _ in module.named_parameters()}
            names |= {f"{prefix}.{n}" for n, _ in module.named_buffers()}
    return names


def _changed_after_training(tiny_nemo, speech_data, mode: str) -> tuple[set[str], object]:
    info = inspect_checkpoint(tiny_nemo)
    data = DataSpec(train=str(speech_data["train"]), validation=str(speech_data["validation"]))
    training = TrainingSpec(accelerator="cpu", validation_batch_size=16)
    budget = BudgetSpec(max_steps=4, val_check_interval=2, warmup_fraction=0.25)
    cfg = trial_config(
        info.config, {"lr": 3e-3, "batch_duration": 10}, data=data, training=training, budget=budget, seed=0
    )
    trainer = build_trainer(training, max_steps=4, val_check_interval=2, callbacks=[FreezeCallback(mode)])
    model = restore_model(tiny_nemo, cfg, trainer)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trainer.fit(model)  # a validation at step 2, then two more steps
    after = model.state_dict()
    changed = {k for k, v in before.items() if v.dtype.is_floating_point and not torch.equal(v, after[k])}
    changed |= {k for k, v in before.items() if k.endswith("num_batches_tracked") and not torch.equal(v, after[k])}
    return changed, model


@pytest.mark.parametrize("mode", ["none", "encoder", "encoder_bn_se", "all_but_bn_se"])
def test_freeze_mode_changes_exactly_the_expected_tensors(tiny_nemo, speech_data, mode):
    changed, model = _changed_after_training(tiny_nemo, speech_data, mode)
    encoder = {k for k in changed if k.startswith("encoder.")}
    decoder = {k for k in changed if k.startswith(("transf_decoder.", "log_softmax."))}
    bn = _bn_tensor_names(model)
    encoder_bn = {k for k in bn if k.startswith("encoder.")}
    assert encoder_bn, "the FastConformer twin has BatchNorm in its conv modules"
    if mode == "none":
        assert encoder and decoder and encoder_bn <= changed
    elif mode == "encoder":
        assert not encoder and decoder
    elif mode == "encoder_bn_se":
        assert encoder == encoder_bn and decoder
    else:
        assert changed == encoder_bn
