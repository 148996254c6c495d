"""Lightning training of one trial: trainer, model restore with the trial config, fit.

One code path for CPU and GPU: `accelerator: auto` picks the device, and `precision: auto`
means bf16-mixed where the GPU supports it and 32-bit everywhere else.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.plugins.environments import LightningEnvironment
from lightning.pytorch.strategies import DDPStrategy, Strategy
from omegaconf import DictConfig

from harness.replay import REPLAY_SOURCE, cut_source
from harness.spec import TrainingSpec

log = logging.getLogger(__name__)


def uses_cuda(training: TrainingSpec) -> bool:
    return training.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def resolve_precision(training: TrainingSpec) -> str:
    """bf16-mixed on a bf16-capable GPU, 32-bit on CPU (where bf16 autocast is slow)."""
    if training.precision != "auto":
        return training.precision
    return "bf16-mixed" if uses_cuda(training) and torch.cuda.is_bf16_supported() else "32-true"


def inference_device(training: TrainingSpec) -> str:
    """Where decoding outside the Trainer runs (per-pair scoring, the test set): the training device.

    Lightning moves the model back to the CPU when `fit()` ends, so it must be moved again."""
    return "cuda" if uses_cuda(training) else "cpu"


def inference_context(training: TrainingSpec) -> contextlib.AbstractContextManager:
    """The autocast the Trainer validates under (bf16 on a GPU), so per-pair scores match NeMo's."""
    precision = resolve_precision(training)
    if not uses_cuda(training) or "16" not in precision:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if precision.startswith("bf16") else torch.float16)


def trial_strategy(training: TrainingSpec) -> Strategy | str:
    """DDP over the slot's devices when a trial has several, started by the trial process itself.

    `LightningEnvironment` makes the trial process launch its own ranks (`python -m harness.trial`
    again with LOCAL_RANK set) even inside a Slurm job or under torchrun, whose variables would
    otherwise be taken as the trial's ranks. The process group is NCCL on GPUs and gloo on CPUs."""
    if training.devices == 1:
        return "auto"
    return DDPStrategy(cluster_environment=LightningEnvironment())


def build_trainer(
    training: TrainingSpec, *, max_steps: int, val_check_interval: int, callbacks: list[Callback]
) -> Trainer:
    """A Trainer that validates every `val_check_interval` steps regardless of epoch length.

    `max_steps` must be an int (NeMo's LR scheduler needs it with Lhotse loaders, which have no
    length), and `check_val_every_n_epoch=None` makes an integer interval count global steps.
    """
    return Trainer(
        accelerator=training.accelerator,
        devices=training.devices,
        strategy=trial_strategy(training),
        precision=resolve_precision(training),  # type: ignore[arg-type]  # a name checked by Lightning
        max_steps=max_steps,
        val_check_interval=val_check_interval,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        log_every_n_steps=max_steps + 1,  # NeMo decodes a training batch at each log step: costly
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=callbacks,
    )


def restore_model(nemo_path: Path, cfg: DictConfig, trainer: Trainer | None):
    """Restore the pretrained weights under the trial config and build its dataloaders.

    Restoring with the archive keeps `nemo:` tokenizer paths resolvable, so the copied config
    needs no path surgery and the embedding is never re-initialised.
    """
    from nemo.collections.asr.models import EncDecMultiTaskModel

    model = EncDecMultiTaskModel.restore_from(
        str(nemo_path), override_config_path=cfg, trainer=trainer, map_location="cpu"
    )
    if cfg.get("train_ds") and cfg.train_ds.get("manifest_filepath"):
        model.setup_training_data(model.cfg.train_ds)
    model.setup_validation_data(model.cfg.validation_ds)
    return model


class BatchStats(Callback):
    """Count cuts, audio seconds and padding per training batch: proof that batch_duration took effect.

    Fill is real audio over padded audio (cuts x longest cut): how much of each batch's compute
    trains on speech rather than zeros. Sample counts stay on the batch's device until the
    summary (reading them every step would make a GPU wait for each batch); a tensor's shape is
    known on the host, so the padded size costs nothing. A blend of sources (`harness.replay`) also counts
    its cuts by source: `train_replay_share`, the share of replay cuts in the batches trained on."""

    def __init__(self) -> None:
        self.cuts: list[int] = []
        self.sources: dict[str, int] = {}
        self.padded: list[int] = []
        self.samples: list[torch.Tensor] = []
        self.sample_rate = 16000

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.sample_rate = pl_module.cfg.get("sample_rate", 16000)
        self.cuts.append(int(batch.audio.shape[0]))
        self.padded.append(int(batch.audio.shape[0]) * int(batch.audio.shape[-1]))
        self.samples.append(batch.audio_lens.detach().sum())
        for cut in batch.cuts or ():
            source = cut_source(cut)
            if source is not None:
                self.sources[source] = self.sources.get(source, 0) + 1

    @property
    def seconds(self) -> list[float]:
        if not self.samples:
            return []
        return (torch.stack(self.samples).double().cpu() / self.sample_rate).tolist()

    def summary(self) -> dict[str, float]:
        if not self.cuts:
            return {}
        seconds = self.seconds
        return {
            "train_batch_cuts_mean": sum(self.cuts) / len(self.cuts),
            "train_batch_seconds_max": max(seconds),
            "train_audio_seconds": sum(seconds),
            "train_audio_seconds_per_step": sum(seconds) / len(seconds),
            "train_batch_fill": sum(seconds) * self.sample_rate / max(1, sum(self.padded)),
        } | self._replay_share()

    def _replay_share(self) -> dict[str, float]:
        blended = sum(self.sources.values())
        return {"train_replay_share": self.sources.get(REPLAY_SOURCE, 0) / blended} if blended else {}
