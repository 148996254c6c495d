"""Freezing modes and `enable_bn_se`: the only module that touches `requires_grad`.

Modes (search-space param `freeze`):
- `none`: full fine-tune.
- `encoder`: the encoder is frozen (no gradients, eval mode: dropout off, BatchNorm statistics fixed).
- `encoder_bn_se`: encoder frozen, then its BatchNorm (and SqueezeExcite) layers re-enabled: trainable
  parameters, train mode so running statistics adapt to the new domain (NeMo CTC tutorials' recipe).
- `all_but_bn_se`: everything frozen except those BatchNorm/SE layers.

Modes differ only in what trains, never in how the input is augmented: the top-level model, the
preprocessor (dither) and `spec_augmentation` always stay in train mode, because NeMo applies
SpecAugment only while the top-level model is training (`EncDecMultiTaskModel.forward`). Only the
frozen submodules are put in eval mode.

`FreezeCallback` freezes in `setup`, before the Trainer's strategy wraps the model: DDP registers
only the parameters that need gradients when it wraps, so a parameter frozen after the wrap is one it
waits for forever ("parameters that were not used in producing the loss"). `transcribe()` and
Lightning's evaluation loop reset train/eval modes, so it re-applies the mode whenever training
(re)starts; the trainable set is the same every time, so the wrap stays valid.
"""

from __future__ import annotations

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn

from harness.search_space import FREEZE_MODES


def is_bn_or_se(module: nn.Module) -> bool:
    """BatchNorm of any flavour (incl. NeMo's fused one) and SqueezeExcite blocks."""
    name = type(module).__name__
    return isinstance(module, nn.modules.batchnorm._BatchNorm) or "BatchNorm" in name or "SqueezeExcite" in name


def enable_bn_se(root: nn.Module) -> None:
    """Put BatchNorm/SE layers under `root` back in train mode with trainable parameters."""
    for module in root.modules():
        if is_bn_or_se(module):
            module.train()
            for param in module.parameters():
                param.requires_grad_(True)


AUGMENTATION = ("preprocessor", "spec_augmentation")  # children that must keep training mode (dither, masks)


def _freeze(module: nn.Module) -> None:
    """No gradients and eval mode (dropout off, BatchNorm statistics fixed) for a frozen submodule."""
    for param in module.parameters():
        param.requires_grad_(False)
    module.eval()


def _freeze_all_but_augmentation(model: nn.Module) -> None:
    """Freeze every parameter, but put only weight-carrying children in eval: never the model itself.

    `model.eval()` would also switch off SpecAugment, dither and dropout outside the frozen layers.
    """
    for param in model.parameters():
        param.requires_grad_(False)
    for name, child in model.named_children():
        if name not in AUGMENTATION and any(True for _ in child.parameters()):
            child.eval()


def apply_freeze(model: nn.Module, mode: str) -> None:
    """Set requires_grad and train/eval modes on a Canary model for one freezing mode."""
    if mode not in FREEZE_MODES:
        raise ValueError(f"unknown freeze mode {mode!r}; use one of {FREEZE_MODES}")
    model.train()
    for param in model.parameters():
        param.requires_grad_(True)
    if mode == "none":
        return
    if mode == "all_but_bn_se":
        _freeze_all_but_augmentation(model)
        enable_bn_se(model)
        return
    encoder = model.get_submodule("encoder")
    _freeze(encoder)
    if mode == "encoder_bn_se":
        enable_bn_se(encoder)


class FreezeCallback(Callback):
    """Freeze before the DDP wrap; re-apply the modes at the start of training and after every validation."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Lightning calls this before `strategy.setup` wraps the model (DDP), on every rank."""
        if stage == TrainerFn.FITTING:
            apply_freeze(pl_module, self.mode)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        apply_freeze(pl_module, self.mode)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            apply_freeze(pl_module, self.mode)
