"""Freezing modes: after real training steps (with a validation in between), exactly the
expected tensors of the tiny twin changed; and every mode keeps augmentation (SpecAugment, dither)
on, so modes differ only in what trains."""

import pytest
import torch

from harness.canary import inspect_checkpoint, trial_config
from harness.freezing import FreezeCallback, apply_freeze, is_bn_or_se
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


@pytest.fixture(scope="module")
def tiny_model(tiny_nemo):
    from nemo.collections.asr.models import EncDecMultiTaskModel

    return EncDecMultiTaskModel.restore_from(str(tiny_nemo), map_location="cpu")


def _expected_trainable(model, mode: str) -> set[str]:
    """Parameter names the mode trains, derived from the module tree (not from freezing.py)."""
    names = {name for name, _ in model.named_parameters()}
    bn = {
        f"{prefix}.{name}"
        for prefix, module in model.named_modules()
        if is_bn_or_se(module)
        for name, _ in module.named_parameters()
    }
    encoder = {name for name in names if name.startswith("encoder.")}
    return {
        "none": names,
        "encoder": names - encoder,
        "encoder_bn_se": (names - encoder) | (bn & encoder),
        "all_but_bn_se": bn,
    }[mode]


def _trains_in_train_mode(name: str, layer, mode: str) -> bool:
    """Which weight-carrying layers stay in train mode: trainable ones (dropout, BN statistics)."""
    if mode == "none":
        return True
    if mode == "all_but_bn_se":
        return is_bn_or_se(layer)
    if not name.startswith("encoder."):
        return True
    return mode == "encoder_bn_se" and is_bn_or_se(layer)


@pytest.mark.parametrize("mode", ["none", "encoder", "encoder_bn_se", "all_but_bn_se"])
def test_every_freeze_mode_keeps_augmentation_on(tiny_model, mode):
    model = tiny_model
    model.eval()  # as after transcribe() or a validation: apply_freeze must set every mode itself
    apply_freeze(model, mode)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == _expected_trainable(model, mode)
    assert model.training and model.preprocessor.training and model.spec_augmentation.training
    layers = {name: module for name, module in model.named_modules() if any(True for _ in module.parameters(False))}
    assert {name for name, m in layers.items() if m.training} == {
        name for name, m in layers.items() if _trains_in_train_mode(name, m, mode)
    }

    masked = []
    hook = model.spec_augmentation.register_forward_hook(
        lambda module, args, kwargs, out: masked.append(not torch.equal(out, kwargs["input_spec"])), with_kwargs=True
    )
    try:
        torch.manual_seed(0)
        audio, lengths = 0.1 * torch.randn(1, 16000), torch.tensor([16000])
        model.forward(input_signal=audio, input_signal_length=lengths)
        first, _ = model.preprocessor(input_signal=audio, length=lengths)
        second, _ = model.preprocessor(input_signal=audio, length=lengths)
    finally:
        hook.remove()
    assert masked == [True], "SpecAugment must run (and mask) in every freeze mode"
    assert not torch.equal(first, second), "the preprocessor must keep dithering in every freeze mode"
