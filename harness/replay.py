"""Replay: old-domain training data blended into a trial's batches, the lever that keeps what a model knew.

`data.replay` names old-domain training manifests (a sample of the pretraining data); the search-space knob
`replay_fraction` (f) sets how much of the training they make. A trial with f > 0 trains on NeMo's own
multi-source Lhotse config, `train_ds.input_cfg`: two `nemo` sources, the sweep's training manifest at weight
1 - f and the replay manifests at weight f (several replay manifests form one source, each weighted by its
line count). NeMo multiplexes them (`CutSet.mux` in `common/data/lhotse/cutset.py`), drawing each cut from
a source with probability its weight: **f is a share of cuts**, not of audio seconds (replay utterances
shorter than the new domain's bring less than f of the audio). Each source repeats without end, so the
blend has no epochs; 1-D buckets and `batch_duration` form its batches (`harness.batching`, whose smaller
buffer for a blend keeps the batches' share at f). That buffer is the only shuffle Lhotse gives a blend, a
window of about 2 x `batch_duration` cuts over each source in its line order, so the trial process reads each
source from its own copy in an order drawn from the trial's seed (`shuffle_blend`): a training manifest sorted
by duration, speaker or corpus still reaches the batches shuffled, and `reproduce` reads the same order.
f = 0 trains on the training manifest alone, as a sweep without `data.replay` does.

Each source tags its cuts (`harness_source` in `cut.custom`, NeMo's `tags`), so the cuts a trial trained on
are counted by source (`training.BatchStats`: `train_replay_share`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from harness.batching import apply_blend_buffer
from harness.spec import DataSpec
from harness.trial_manifests import shuffled_copy

PARAM = "replay_fraction"
SOURCE_TAG = "harness_source"
TRAIN_SOURCE = "train"
REPLAY_SOURCE = "replay"


def replay_fraction(params: Mapping[str, Any]) -> float:
    """A trial's share of replay cuts: its `replay_fraction`, 0 when the space has none."""
    return float(params.get(PARAM, 0.0))


def apply_replay(train_ds: DictConfig, data: DataSpec, fraction: float) -> None:
    """Blend `data.replay` into the training batches at `fraction` of the cuts; nothing at 0.

    `manifest_filepath` stays the training manifest: NeMo reads `input_cfg` instead when it is set
    (`read_cutset_from_config`), and the harness still names the trial's training data by it."""
    if fraction <= 0:
        return
    if not data.replay:
        raise ValueError(f"{PARAM} {fraction:g} needs `data.replay` manifests")  # refused on load (spec)
    replay = data.replay[0] if len(data.replay) == 1 else list(data.replay)
    train_ds.input_cfg = [
        _source(data.train, 1.0 - fraction, TRAIN_SOURCE),
        _source(replay, fraction, REPLAY_SOURCE),
    ]
    apply_blend_buffer(train_ds)


def shuffle_blend(train_ds: DictConfig, folder: Path, seed: int) -> None:
    """Point each source of a trial's blend at a copy of its lines (several replay manifests in one) in an
    order drawn from `seed` and the source's name, written to `folder`; nothing without a blend. Each pass over
    a source repeats its copy's order; the draws between sources and the buckets mix each pass anew."""
    for source in train_ds.get("input_cfg") or ():
        name = source.tags[SOURCE_TAG]
        manifests = source.manifest_filepath
        manifests = [manifests] if isinstance(manifests, str) else list(manifests)
        source.manifest_filepath = str(shuffled_copy(manifests, folder / f"{name}.json", f"{seed}/{name}"))


def _source(manifest: str | list[str], weight: float, name: str) -> dict[str, Any]:
    return {"type": "nemo", "manifest_filepath": manifest, "weight": weight, "tags": {SOURCE_TAG: name}}


def cut_source(cut: Any) -> str | None:
    """Which source a training cut came from (`train`, `replay`), or None outside a blend. A cut padded to
    its batch (Lhotse's MixedCut) answers for the one it pads."""
    return getattr(cut, SOURCE_TAG, None)
