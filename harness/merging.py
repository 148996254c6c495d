"""Weight interpolation with the pretrained model (WiSE-FT), judged after training without retraining.

A fine-tune that learns a new domain can forget the old one; its merge with the pretrained weights,
theta = (1 - alpha) x theta_0 + alpha x theta_ft, often keeps most of both (Wortsman et al., CVPR 2022).
The search space's `merge_alpha` values (`harness.search_space.merge_alphas`, 1 always among them) are
not sampled: a complete trial's process, on global rank 0 after training, judges every one. Each
merge decodes the validation set through the validation's own decode (a `Trainer.validate` that the
trial's `ValidationTranscripts` listens to) and the retention sets (`harness.retention`): the figures
of one definition. Alpha 1 is the fine-tuned model itself, whose figures the trial already has.
The model handed over is the best alpha within `objective.retention_max_wer_increase` (`choose_alpha`);
the trial's figures, objective, predictions and saved `.nemo` are that merge's.

What it costs: theta_0 is a CPU copy, taken once when training starts (`PretrainedWeights`), of only
the tensors training can change (parameters that need gradients under the freeze mode, and the statistics
of BatchNorm layers left training); no model is loaded again. After training the copies still equal to
the trained tensors are dropped, theta_ft is copied once, and each alpha is written into the model in
place over the changed tensors alone (`torch.lerp`, exact at both ends: alpha 0 is the pretrained
weights bit for bit, alpha 1 the fine-tuned). The decodes are the cost: one validation and one
retention pass per alpha below 1.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from harness.freezing import is_bn_or_se
from harness.metrics import logged_loss
from harness.objective import objective_value
from harness.retention import WER, alone, preference, score_retention, wer_increase
from harness.scoring import Transcript
from harness.search_space import format_param
from harness.spec import SweepSpec
from harness.training import build_trainer
from harness.transcripts import ValidationTranscripts

NO_MERGE = 1.0  # the fine-tuned model as trained


def alpha_key(alpha: float) -> str:
    """`0.5`: an alpha as the trial's record (`TrialRecord.merges`) and its MLflow names write it."""
    return format_param(float(alpha))


def metric_names(alpha: float, figures: Mapping[str, float]) -> dict[str, float]:
    """One alpha's figures as MLflow metrics on the trial's run: `merge/alpha_0.5/val_wer`."""
    return {f"merge/alpha_{alpha_key(alpha)}/{name}": value for name, value in figures.items()}


class PretrainedWeights(Callback):
    """theta_0: a CPU copy of the tensors training can change, taken on global rank 0 when training starts
    (after `FreezeCallback.setup` has chosen what trains, before the first step)."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.global_rank == 0 and not self.tensors:
            self.tensors = {name: t.detach().to("cpu", copy=True) for name, t in _changeable(pl_module).items()}


def _changeable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters that need gradients, and the statistics of BatchNorm layers in train mode (what the freeze mode
    leaves training); the other buffers (positional encodings, filterbanks) are derived, not learnt."""
    tensors = {name: p for name, p in model.named_parameters() if p.requires_grad}
    for prefix, module in model.named_modules():
        if is_bn_or_se(module) and module.training:
            buffers = module.named_buffers(prefix=prefix, recurse=False)
            tensors |= {name: b for name, b in buffers if b.is_floating_point()}
    return tensors


class Interpolation:
    """theta_0 and theta_ft of the tensors training changed; `apply` writes their merge into the model in place.
    Tensors are looked up by name at each call: moving a model between devices replaces its buffers."""

    def __init__(self, model: torch.nn.Module, pretrained: Mapping[str, torch.Tensor]) -> None:
        live = _tensors(model)
        trained = {name: live[name].detach().to("cpu", copy=True) for name in pretrained}
        changed = [name for name in pretrained if not torch.equal(pretrained[name], trained[name])]
        self.start = {name: pretrained[name] for name in changed}
        self.end = {name: trained[name] for name in changed}

    @property
    def changed(self) -> int:
        """How many tensors differ between the pretrained and the fine-tuned model."""
        return len(self.start)

    @torch.no_grad()
    def apply(self, model: torch.nn.Module, alpha: float) -> None:
        """theta = (1 - alpha) x theta_0 + alpha x theta_ft on every changed tensor; the others are equal in both."""
        live = _tensors(model)
        for name, start in self.start.items():
            live[name].copy_(torch.lerp(start, self.end[name], float(alpha)))


def _tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return dict(model.named_parameters()) | dict(model.named_buffers())


@dataclass
class Judged:
    """One alpha's model: its validation figures (`val_*`, `val_loss`), retention figures and validation transcripts."""

    validation: dict[str, float]
    retention: dict[str, float]
    transcripts: list[Transcript]

    @property
    def figures(self) -> dict[str, float]:
        return self.validation | self.retention


@dataclass
class Merges:
    """Every judged alpha of one trial, the one chosen, and the seconds the merges and their decodes took."""

    judged: dict[float, Judged]
    alpha: float
    seconds: float
    changed: int  # tensors that differ between the pretrained and the fine-tuned model

    @property
    def chosen(self) -> Judged:
        return self.judged[self.alpha]

    def record(self) -> dict[str, dict[str, float]]:
        """`{"0.5": figures}` for the trial's record and result (`TrialRecord.merges`)."""
        return {alpha_key(alpha): judged.figures for alpha, judged in sorted(self.judged.items())}

    def metrics(self) -> dict[str, float]:
        """Every alpha's figures as MLflow metrics, and the time they took (`merge_seconds`)."""
        metrics = {"merge_seconds": self.seconds, "merge_changed_tensors": float(self.changed)}
        for alpha, judged in sorted(self.judged.items()):
            metrics |= metric_names(alpha, judged.figures)
        return metrics


def judge_merges(
    model: LightningModule,
    pretrained: Mapping[str, torch.Tensor],
    spec: SweepSpec,
    alphas: Sequence[float],
    tuned: Judged,
    transcripts: ValidationTranscripts,
    baseline: Mapping[str, float] | None,
) -> Merges:
    """Judge every alpha (alpha 1 is `tuned`, the trained model's own figures) and leave the model merged at the
    chosen one. `transcripts` is the trial's validation listener: NeMo's metrics report to it alone."""
    started = time.monotonic()
    interpolation = Interpolation(model, pretrained)
    judged = {}
    for alpha in sorted(set(alphas)):
        if alpha == NO_MERGE:
            judged[alpha] = tuned
            continue
        interpolation.apply(model, alpha)
        validation, lines = validate(model, spec, transcripts)
        judged[alpha] = Judged(validation, score_retention(model, spec, baseline=False), lines)
    alpha = choose_alpha({a: j.figures for a, j in judged.items()}, spec, baseline)
    interpolation.apply(model, alpha)
    return Merges(judged, alpha, time.monotonic() - started, interpolation.changed)


def validate(
    model: LightningModule, spec: SweepSpec, transcripts: ValidationTranscripts
) -> tuple[dict[str, float], list[Transcript]]:
    """The validation set decoded and scored as a trial's validations are, on this process alone (after a DDP
    fit the other ranks have ended: the validation data is rebuilt unsharded); `val_loss` and the `val_` figures."""
    single = dataclasses.replace(spec.training, devices=1)
    trainer = build_trainer(single, max_steps=1, val_check_interval=1, callbacks=[transcripts])
    with alone(model):
        if spec.training.devices > 1:
            model.setup_validation_data(model.cfg.validation_ds)
        trainer.validate(model, verbose=False)
    return logged_loss(trainer.callback_metrics) | transcripts.figures, transcripts.transcripts


def choose_alpha(figures: Mapping[float, Mapping[str, float]], spec: SweepSpec, baseline: Mapping | None) -> float:
    """The alpha whose model the trial hands over. With `objective.retention_max_wer_increase`: the best primary
    objective among the alphas within the limit (ties: the lower retention WER, then the larger alpha);
    none within: the smallest increase, so the trial's constraint says by how little it failed. Without a limit,
    or without the baseline's retention WER to judge by: 1, the fine-tuned model unmerged. One judged alpha
    (a reproduction) is the one handed over."""
    if len(figures) == 1:
        return next(iter(figures))
    limit = spec.objective.retention_max_wer_increase
    increases = {alpha: wer_increase(f, baseline) for alpha, f in figures.items()}
    if limit is None or any(increase is None for increase in increases.values()):
        return NO_MERGE if NO_MERGE in figures else max(figures)
    judged = {alpha: increase for alpha, increase in increases.items() if increase is not None}
    within = [alpha for alpha, increase in judged.items() if increase <= limit]
    if not within:
        return min(judged, key=lambda a: (judged[a], -a))
    sign = spec.direction.sign
    return min(within, key=lambda a: preference(sign, objective_value(figures[a], spec.objective), figures[a][WER], a))
