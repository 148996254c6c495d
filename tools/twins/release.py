"""The quirks of released Canary checkpoints, written into a twin's saved config.

`apply_release_quirks` is what every packaged twin carries; `apply_overriding_keys` and
`rewrite_config` let tests try keys a checkpoint might carry without retraining a twin.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Released checkpoints were trained on a cluster with OOMptimizer batches: these values mimic that.
RELEASED_BUCKET_BINS = [[2.0, 24], [3.0, 36], [4.5, 52], [7.0, 80], [12.0, 130], [20.0, 220], [40.0, 437]]
RELEASED_BUCKET_BATCH_SIZE = [334, 240, 170, 110, 66, 40, 25]


def apply_release_quirks(cfg: Any, name: str) -> None:
    """Make the saved config look like a released one (in place, on an OmegaConf model config).

    text_field `answer`, 2-D bins with per-bucket batch sizes, cluster manifest paths, a long
    warmup, no metric config, a test_ds section and tokenizer dirs of the training machine.
    """
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.train_ds.update(
            manifest_filepath="/data/ASR/canary-twins/commands/train_manifest.json",
            text_field="answer",
            use_bucketing=True,
            num_workers=8,
            pin_memory=True,
            bucket_duration_bins=RELEASED_BUCKET_BINS,
            bucket_batch_size=RELEASED_BUCKET_BATCH_SIZE,
            bucket_buffer_size=40000,
            concurrent_bucketing=False,
            shard_seed="trng",
        )
        cfg.validation_ds.update(
            manifest_filepath="/data/ASR/canary-twins/commands/dev_manifest.json",
            text_field="answer",
            num_workers=4,
            pin_memory=True,
        )
        cfg.test_ds = copy.deepcopy(cfg.validation_ds)
        cfg.test_ds.manifest_filepath = "/data/ASR/canary-twins/commands/test_manifest.json"
        cfg.optim.sched.warmup_steps = 2500
        cfg.use_loss_mask_for_prompt = True
        cfg.pop("multitask_metrics_cfg", None)
        cfg.pop("restore_timestamps_model", None)
        _point_tokenizer_dirs_at_cluster(cfg.tokenizer, name)


def _point_tokenizer_dirs_at_cluster(tokenizer_cfg: Any, name: str) -> None:
    """`dir` keeps the training machine's path in released models; only `nemo:` paths resolve."""
    root = f"/lustre/fsw/canary-twins/{name}/tokenizers"
    if tokenizer_cfg.get("langs"):
        for lang, entry in tokenizer_cfg.langs.items():
            entry.dir = f"{root}/{lang}"
    else:
        tokenizer_cfg.dir = f"{root}/unified"


CLUSTER_DATA = "/data/ASR/canary-twins/commands"


def apply_overriding_keys(cfg: Any, other_manifest: str = f"{CLUSTER_DATA}/blend_manifest.json") -> None:
    """Write the loader and schedule keys that would bypass a trial (in place, as a released or
    user-fine-tuned checkpoint might carry them): a blend of other data, tarred shards, token-based
    batching, cut concatenation, speed and noise augmentation, tokens-per-second filters, truncation,
    Lhotse's audio augmentations, NeMo's step-wise `freeze_updates`, validation buckets and absolute
    hold steps.

    `other_manifest` is the data they point at; a test passes a real manifest, so that a trial
    that kept them would train on it silently. The packaged twins do not carry these keys
    (retraining one takes minutes): tests write them into a copy with `rewrite_config`.
    """
    from omegaconf import open_dict

    blend = [{"type": "nemo", "manifest_filepath": other_manifest, "weight": 1.0}]
    with open_dict(cfg):
        cfg.train_ds.update(
            input_cfg=blend,
            cuts_path=f"{CLUSTER_DATA}/cuts.jsonl.gz",
            shar_path=f"{CLUSTER_DATA}/shar",
            is_tarred=True,
            tarred_audio_filepaths=f"{CLUSTER_DATA}/audio__OP_0..63_CL_.tar",
            use_multimodal_sampling=True,
            concatenate_samples=True,
            perturb_speed=True,
            noise_path=other_manifest,
            max_tps=1.0,  # tokens per second: drops nearly every cut
            min_tps=100.0,  # likewise, from below
            truncate_duration=1.0,  # a 1 s chunk of each cut, trained against its whole transcript
            lowpass_enabled=True,
            clipping_enabled=True,
            rir_enabled=True,
            compression_enabled=True,
        )
        cfg.freeze_updates = {"enabled": True, "modules": {"encoder": -1}}  # NeMo would keep the encoder frozen
        cfg.validation_ds.update(
            input_cfg=blend,
            bucket_duration_bins=RELEASED_BUCKET_BINS,
            bucket_batch_size=RELEASED_BUCKET_BATCH_SIZE,
        )
        cfg.optim.sched.hold_steps = 20000


def rewrite_config(src: Path, dst: Path, edit: Callable[[Any], None]) -> Path:
    """A copy of a `.nemo` whose model_config.yaml went through `edit` (weights and tokenizers are
    copied byte for byte), to try configs a checkpoint might carry without retraining a twin."""
    import io
    import tarfile

    from omegaconf import OmegaConf

    with tarfile.open(src, "r:*") as archive, tarfile.open(dst, "w") as out:
        for member in archive.getmembers():
            data = archive.extractfile(member) if member.isfile() else None
            if Path(member.name).name == "model_config.yaml":
                cfg = OmegaConf.create(data.read().decode())
                edit(cfg)
                text = OmegaConf.to_yaml(cfg).encode()
                member, data = copy.copy(member), io.BytesIO(text)
                member.size = len(text)
            out.addfile(member, data)
    return Path(dst)
