"""Retention sets (`data.retention`): what a fine-tune costs on the model's old domain.

Fine-tuning on a new domain can ruin the old one (WER on the original domain doubling is a common
report). The user names manifests of what the model must keep doing; after training, each complete
trial's process decodes them with the trained model (rank 0 only), and the baseline process with
the pretrained one, so every trial's figure is read against the model it started from. Pruned
trials are not scored: they cannot be the best, and the decode would cost time for nothing.

Several manifests are scored as one set (their lines pooled, corpus figures over all of them):
the limit and the report need one number per trial, and the per-pair figures still split it by
language. The figures are the validation ones with a `retention_` prefix: `retention_wer`,
`retention_wer_normalized`, `retention_bleu`, `retention_wer/en-en`, `retention_bleu/en-de`.

With `objective.retention_max_wer_increase`, a complete trial whose retention WER exceeds the
baseline's by more than that is infeasible (`harness.study.set_retention_constraint`).
Nothing here imports torch or NeMo at module level: the supervisor uses the judging half.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

from harness.spec import SweepSpec

PREFIX = "retention_"
WER = f"{PREFIX}wer"


def retention_manifests(spec: SweepSpec, *, baseline: bool) -> list[str]:
    """The copies a process scores: plain for the pretrained model (it never learnt behaviour tokens),
    prompted for a fine-tuned one (a line without a behaviour's field: its default, else off)."""
    from harness.trial_manifests import trial_data

    return list(trial_data(spec, baseline=baseline).retention)


def score_retention(model, spec: SweepSpec, *, baseline: bool) -> dict[str, float]:
    """Decode every retention manifest with `model` and score them as one set; {} without `data.retention`."""
    manifests = retention_manifests(spec, baseline=baseline)
    if not manifests:
        return {}
    from harness.scoring import decode_manifest, score
    from harness.training import inference_context, inference_device

    model.to(inference_device(spec.training))  # Lightning moves the model to the CPU when fit() ends
    transcripts = []
    with alone(model), inference_context(spec.training):
        for manifest in manifests:
            transcripts += decode_manifest(
                model, Path(manifest), spec.data.text_field, batch_size=spec.training.validation_batch_size
            )
    return {f"{PREFIX}{name}": value for name, value in score(transcripts).items()}


@contextlib.contextmanager
def alone(model) -> Iterator[None]:
    """Decode every line in this process, the only one left after a DDP fit (the other ranks end when
    training does): NeMo's dataloader would give it only its shard (`_setup_dataloader_from_config` reads
    the model's `world_size`), and the encoder would wait in an all-reduce for the ended ranks
    (`ConformerEncoder.update_max_seq_length`), so the process group, of no further use, is destroyed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    world_size = getattr(model, "world_size", 1)
    model.world_size = 1
    try:
        yield
    finally:
        model.world_size = world_size


def wer_increase(final: Mapping[str, float], baseline: Mapping[str, float] | None) -> float | None:
    """The trial's retention WER minus the pretrained model's (a fraction; > 0 is forgetting), or None
    when either is missing (no baseline yet, a retention set without same-language lines)."""
    if not baseline or WER not in baseline or WER not in final:
        return None
    return final[WER] - baseline[WER]


def preference(sign: int, objective: float, retention_wer: float, alpha: float) -> tuple[float, float, float]:
    """How models that keep within the limit rank, best first (`min`): the better objective (`sign`: the study's
    direction), then the lower retention WER, then the larger merge alpha (nearer the fine-tune as trained)."""
    return (sign * objective, retention_wer, -alpha)


def forgets_text(increase: float, limit: float) -> str:
    """The note of a trial the limit made infeasible: `forgets: retention WER +0.1200 > 0.05`."""
    return f"forgets: retention WER {increase:+.4f} > {limit:g}"
