"""Canary config surgery (Approach A): copy the pretrained config, override only what a trial sets.

All NeMo Canary knowledge about configs lives here: how a `.nemo` stores its config, which
tokenizer kind and prompt format a checkpoint uses, and how each sampled parameter is written
into the copied config so that it really takes effect (docs/ARCHITECTURE.md, "Canary facts").
"""

from __future__ import annotations

import copy
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from harness.batching import apply_batch_duration
from harness.behaviours import CONFIG_KEY as BEHAVIOURS_KEY
from harness.behaviours import ORIGINAL_SOURCE_LANG, declaration
from harness.errors import ModelError
from harness.replay import apply_replay, replay_fraction
from harness.spec import BehaviourSpec, BudgetSpec, DataSpec, TrainingSpec

# WER on ASR samples, BLEU on translation samples. No spaces inside a constraint: NeMo's
# constraint parser splits on whitespace and raises on `.a == .b`.
MULTITASK_METRICS = {
    "log_predictions": False,
    "metrics": {
        "wer": {
            "_target_": "nemo.collections.asr.metrics.WER",
            "constraint": ".source_lang==.target_lang",
            "log_prediction": False,
        },
        "bleu": {
            "_target_": "nemo.collections.asr.metrics.BLEU",
            "constraint": ".source_lang!=.target_lang",
            "bleu_tokenizer": "13a",
            "check_cuts_for_bleu_tokenizers": False,
            "log_prediction": False,
        },
    },
}
DEFAULT_BATCH_DURATION = 60.0


@dataclass(frozen=True)
class CheckpointInfo:
    """What preflight and surgery need to know about a pretrained checkpoint."""

    path: Path
    tokenizer_kind: str  # "aggregate" | "unified"
    prompt_format: str  # "canary" | "canary2"
    languages: tuple[str, ...]  # empty for unified tokenizers (languages live in one vocabulary)
    config: DictConfig


def read_config(nemo_path: Path) -> DictConfig:
    """The model config stored in a `.nemo` tar, read without importing NeMo (fast, no restore)."""
    try:
        with tarfile.open(nemo_path, "r:*") as archive:
            member = next(m for m in archive.getmembers() if Path(m.name).name == "model_config.yaml")
            handle = archive.extractfile(member)
            if handle is None:
                raise tarfile.TarError("model_config.yaml is not a file")
            text = handle.read().decode()
    except (tarfile.TarError, StopIteration, OSError) as exc:
        raise ModelError(f"{nemo_path} is not a readable .nemo checkpoint ({exc}); pass a .nemo file.") from None
    config = OmegaConf.create(text)
    if not isinstance(config, DictConfig):
        raise ModelError(f"{nemo_path}: model_config.yaml is not a mapping; pass a NeMo .nemo checkpoint.")
    return config


def inspect_checkpoint(nemo_path: Path) -> CheckpointInfo:
    """Detect tokenizer kind and prompt format; refuse configs that mix tokenizer kinds."""
    cfg = read_config(nemo_path)
    tok = cfg.get("tokenizer") or {}
    kind = tok.get("type")
    langs = dict(tok.get("langs") or {})
    if kind == "agg":
        if "spl_tokens" not in langs:
            raise ModelError(f"{nemo_path}: aggregate tokenizer without `spl_tokens`; not a Canary checkpoint.")
        bad = [lang for lang, entry in langs.items() if (entry or {}).get("type", "bpe") not in ("bpe", "wpe")]
        if bad:
            raise ModelError(
                f"{nemo_path}: `tokenizer.langs.{bad[0]}` is not a SentencePiece sub-tokenizer; "
                "aggregate and unified tokenizers cannot be mixed in one config."
            )
        tokenizer_kind, languages = "aggregate", tuple(sorted(set(langs) - {"spl_tokens"}))
    elif kind in ("bpe", "wpe"):
        if langs:
            raise ModelError(
                f"{nemo_path}: `tokenizer.type` is {kind} (unified) but `tokenizer.langs` is set (aggregate); "
                "a config must use one tokenizer kind."
            )
        tokenizer_kind, languages = "unified", ()
    else:
        raise ModelError(f"{nemo_path}: unknown `tokenizer.type` {kind!r}; expected agg or bpe.")
    prompt_format = cfg.get("prompt_format")
    if prompt_format not in ("canary", "canary2"):
        raise ModelError(f"{nemo_path}: `prompt_format` is {prompt_format!r}; the harness supports canary, canary2.")
    return CheckpointInfo(nemo_path, tokenizer_kind, prompt_format, languages, cfg)


def trial_config(
    base: DictConfig,
    params: dict[str, Any],
    *,
    data: DataSpec,
    training: TrainingSpec,
    budget: BudgetSpec,
    seed: int,
    behaviours: Mapping[str, BehaviourSpec] | None = None,
) -> DictConfig:
    """A full copy of the pretrained config with the trial's parameters applied and verified.

    `data` are the manifests trials read: with custom behaviours, their prompted copies."""
    cfg = copy.deepcopy(base)
    with open_dict(cfg):
        _apply_data(cfg, data, training, seed)
        _reset_released_keys(cfg)
        apply_batch_duration(cfg.train_ds, float(params.get("batch_duration", _base_batch_duration(base))), training)
        apply_replay(cfg.train_ds, data, replay_fraction(params))  # after the released `input_cfg` is reset
        _apply_optim(cfg, params, budget)
        if "use_loss_mask_for_prompt" in params:
            cfg.use_loss_mask_for_prompt = bool(params["use_loss_mask_for_prompt"])
        # Always ours: every validation sample must be decoded by exactly one metric, whose
        # hypotheses harness.transcripts scores (a released cfg may constrain or omit some).
        cfg.multitask_metrics_cfg = copy.deepcopy(MULTITASK_METRICS)
        cfg.restore_timestamps_model = False  # NeMo 3.0 crashes building a model after a restore otherwise
        cfg.log_prediction = False
        if behaviours:
            _apply_behaviours(cfg, behaviours)
    return cfg


def _apply_behaviours(cfg: DictConfig, behaviours: Mapping[str, BehaviourSpec]) -> None:
    """Metric constraints read the original language (the prompted `source_lang` carries tokens),
    and the declaration travels with the model config into every saved checkpoint."""
    for metric in (cfg.multitask_metrics_cfg.get("metrics") or {}).values():
        if isinstance(metric.get("constraint"), str):
            metric.constraint = metric.constraint.replace(".source_lang", f".{ORIGINAL_SOURCE_LANG}")
    cfg[BEHAVIOURS_KEY] = declaration(behaviours)


def _base_batch_duration(base: DictConfig) -> float:
    value = base.get("train_ds", {}).get("batch_duration")
    return float(value) if isinstance(value, int | float) else DEFAULT_BATCH_DURATION


def _apply_data(cfg: DictConfig, data: DataSpec, training: TrainingSpec, seed: int) -> None:
    """Point the loaders at the user's manifests with explicit text/lang fields.

    Released configs say `text_field: answer`; a manifest with `text` would then train on empty
    transcripts without any error, so both fields are always set.
    """
    common = {
        "use_lhotse": True,
        "text_field": data.text_field,
        "lang_field": data.lang_field,
        "num_workers": training.num_workers,
        "pin_memory": False,
    }
    cfg.train_ds = cfg.get("train_ds") or {}
    # Lhotse's sampler shuffles with `shard_seed`, "trng" (true random) in released configs: a
    # trial could then never be reproduced from its recorded seed.
    cfg.train_ds.update({**common, "manifest_filepath": data.train, "shuffle": True, "seed": seed, "shard_seed": seed})
    cfg.validation_ds = cfg.get("validation_ds") or {}
    cfg.validation_ds.update(
        {
            **common,
            "manifest_filepath": data.validation,
            "shuffle": False,
            "use_bucketing": False,
            "batch_size": training.validation_batch_size,
        }
    )
    cfg.test_ds = None  # a null manifest makes the model constructor raise; tests run separately


# Loader keys a released or user-fine-tuned config may carry that make NeMo read other data than
# the trial's manifests, or batch or alter it otherwise, each with the value that turns it off
# (NeMo 3.0's Lhotse dataloader, `common/data/lhotse/dataloader.py`, and `setup_training_data`).
# In validation_ds the augmentations would alter the audio every figure is scored on.
RELEASED_DATA_KEYS: dict[str, Any] = {
    "input_cfg": None,  # a blend of data sets, read instead of manifest_filepath (a trial's own: harness.replay)
    "cuts_path": None,  # Lhotse manifests, read instead of manifest_filepath
    "shar_path": None,  # Lhotse Shar shards, likewise
    "tarred_audio_filepaths": None,  # audio read from tar shards instead of the manifest's files
    "is_tarred": False,  # training sizes its epoch by len(dataset) / batch_size: a crash with batch_duration
    "multi_config": False,  # the sub-configs inside train_ds replace it
    "use_multimodal_sampling": False,  # batches counted in tokens: batch_duration is ignored
    "concatenate_samples": False,  # sampled cuts glued into longer ones
    "perturb_speed": False,  # 0.9x and 1.1x copies mixed in: three times the data, other audio
    "noise_path": None,  # noise mixed into the audio
    # Each cut cut to a random chunk of this many seconds, its whole transcript kept (`dataloader.py:590`).
    "truncate_duration": None,
    # Batch augmentations, each on a share of the cuts (`prob` 0.5 by default; `dataloader.py:693-740`):
    "lowpass_enabled": False,  # band-limited by resampling (3.5-8 kHz)
    "clipping_enabled": False,  # amplified up to 24 dB and clipped
    "rir_enabled": False,  # reverberation, synthetic room responses unless `rir_path`
    "compression_enabled": False,  # lossy codec (opus) round trip
    "max_tps": float("inf"),  # a scalar drops cuts with more tokens per second (a list only shapes 2-D buckets)
    "min_tps": -1,  # above 0, drops cuts with fewer tokens per second (`TokenPerSecondFilter`, `dataloader.py:621`)
    # Not here: `min_tokens` / `max_tokens` (`TokenCountFilter`, `dataloader.py:610`) pass audio cuts through
    # (`sampling.py:355`); they filter only text examples, which the reset `input_cfg` alone could bring.
}
# Model keys that override what a trial sets: `freeze_updates` (`enabled`, `modules: {encoder: 1000}`), read
# in `on_train_start` (`core/classes/modelPT.py:1948`), freezes and unfreezes modules by step in
# `on_train_batch_start` (`modelPT.py:1995`): a full fine-tune's encoder frozen for its first steps, then
# every parameter of a module the freeze mode froze trainable again (`unfreeze()`, `core/classes/module.py:42`).
RELEASED_MODEL_KEYS: dict[str, Any] = {"freeze_updates": None}
# Validation batches by `validation_batch_size`; either bucket key turns bucketing back on.
RELEASED_VALIDATION_KEYS: dict[str, Any] = {"bucket_duration_bins": None, "bucket_batch_size": None}
# Absolute step counts sized for the release's 100k+ steps: `hold_steps` keeps a short trial at its
# peak LR throughout, `constant_steps` (CosineAnnealing and kin) leaves it no steps to decay in.
# `hold_ratio` and `constant_ratio` are kept: NeMo multiplies them by the trainer's max_steps,
# which is the trial budget.
RELEASED_SCHED_KEYS = ("hold_steps", "constant_steps")


def released_overrides(cfg: DictConfig) -> list[str]:
    """The keys of a pretrained config that would bypass the trial's data, batching, freezing or step budget.

    Which keys, and why each, are the RELEASED_* tables above. `trial_config` resets each
    (schedule keys are removed: NeMo's schedulers take them as keyword arguments, and those
    without a hold phase reject even a null). Resetting rather than refusing keeps every released
    or fine-tuned checkpoint usable; the names are returned so a supervisor can tell the user once
    per sweep what was ignored, e.g. `train_ds.input_cfg`.
    """
    found = [key for key, off in RELEASED_MODEL_KEYS.items() if _is_on(cfg.get(key), off)]
    for section, keys in (
        ("train_ds", RELEASED_DATA_KEYS),
        ("validation_ds", RELEASED_DATA_KEYS | RELEASED_VALIDATION_KEYS),
    ):
        loader = cfg.get(section) or {}
        found += [f"{section}.{key}" for key, off in keys.items() if _is_on(loader.get(key), off)]
    sched = (cfg.get("optim") or {}).get("sched") or {}
    found += [f"optim.sched.{key}" for key in RELEASED_SCHED_KEYS if sched.get(key) is not None]
    return found


def _is_on(value: Any, off: Any) -> bool:
    """Whether NeMo acts on `value`, for a key that `off` turns off."""
    if off is False:
        return bool(value)
    if isinstance(off, int | float):  # the token-rate filters, as NeMo's `TokenPerSecondFilter.enabled`
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return number and (value < off if isinstance(off, float) else value > 0)  # max_tps: a list is no filter
    if isinstance(value, DictConfig):  # freeze_updates: a block of settings that acts only when enabled
        return bool(value.get("enabled", False))
    return value is not None


def _reset_released_keys(cfg: DictConfig) -> None:
    for name in released_overrides(cfg):
        if name in RELEASED_MODEL_KEYS:
            cfg[name] = RELEASED_MODEL_KEYS[name]
            continue
        section, key = name.rsplit(".", 1)
        node = OmegaConf.select(cfg, section)
        if section == "optim.sched":
            node.pop(key)
        else:
            node[key] = (RELEASED_DATA_KEYS | RELEASED_VALIDATION_KEYS)[key]


def warmup_steps(budget: BudgetSpec, params: Mapping[str, Any]) -> int:
    """A trial's learning-rate warm-up in steps: its `warmup_fraction` (searched, else the budget's) of
    `max_steps`. The pruner judges no trial before it ends (harness.pruners)."""
    return max(1, round(float(params.get("warmup_fraction", budget.warmup_fraction)) * budget.max_steps))


def _apply_optim(cfg: DictConfig, params: dict[str, Any], budget: BudgetSpec) -> None:
    """Learning rate and warmup scaled to the trial budget (2500 warmup steps never peak in 200)."""
    if "lr" in params:
        cfg.optim.lr = float(params["lr"])
    if "weight_decay" in params:
        cfg.optim.weight_decay = float(params["weight_decay"])
    sched = cfg.optim.get("sched")
    if sched is not None:
        sched.warmup_steps = warmup_steps(budget, params)
        sched.warmup_ratio = None  # NeMo asserts when both are set
        if sched.get("min_lr") is not None:
            sched.min_lr = min(float(sched.min_lr), cfg.optim.lr / 10)
