"""What a twin is (its `TwinSpec`) and the full NeMo `model` config pretraining builds from it.

The config is written out key by key (no example yaml is installed) and pretrains plainly: 1-D
batches by duration and `text_field: text`. The released quirks are added at save time
(`tools.twins.release`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.canary import MULTITASK_METRICS
from tools.twins.special_tokens import canary1_special_tokens, canary2_special_tokens

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class TwinSpec:
    """What distinguishes one twin: its released counterpart's format and a small architecture."""

    name: str
    twin_of: str
    prompt_format: str  # "canary2" or "canary"
    tokenizer: str  # "agg" (CanaryTokenizer over per-language BPEs) or "unified" (one SentencePiece)
    special_tokens: Callable[[], list[str]]
    special_vocab_size: int | None  # asserted size of the special tokenizer (agg only)
    subword_vocab: int = 128
    features: int = 80
    enc_layers: int = 4
    enc_hidden: int = 96
    enc_heads: int = 4
    enc_ff_expansion: int = 2
    subsampling_channels: int = 64
    dec_layers: int = 2
    dec_hidden: int = 128
    dec_heads: int = 4
    max_sequence_length: int = 256
    lr: float = 1e-3
    warmup_steps: int = 300


TWINS: dict[str, TwinSpec] = {
    spec.name: spec
    for spec in (
        TwinSpec("canary-tiny", "nvidia/canary-180m-flash", "canary2", "agg", canary2_special_tokens, 1152),
        TwinSpec(
            "canary-tiny-v2",
            "nvidia/canary-1b-v2",
            "canary2",
            "unified",
            canary2_special_tokens,
            None,
            subword_vocab=256,
        ),
        TwinSpec("canary-tiny-v1", "nvidia/canary-1b", "canary", "agg", canary1_special_tokens, None),
    )
}


def twin_spec(name: str) -> TwinSpec:
    """Look a twin up by name, with an error that lists the known ones."""
    if name not in TWINS:
        raise KeyError(f"Unknown twin '{name}'; use one of {sorted(TWINS)}.")
    return TWINS[name]


def prompt_defaults(prompt_format: str) -> list[dict[str, Any]]:
    """Prompt defaults as released checkpoints carry them (canary-180m-flash for canary2)."""
    if prompt_format == "canary":
        return [{"role": "user", "slots": {"source_lang": "en", "target_lang": "en", "task": "asr", "pnc": "yes"}}]
    slots = {
        "decodercontext": "",
        "source_lang": "<|en|>",
        "target_lang": "<|en|>",
        "emotion": "<|emo:undefined|>",
        "pnc": "<|pnc|>",
        "itn": "<|noitn|>",
        "diarize": "<|nodiarize|>",
        "timestamp": "<|notimestamp|>",
    }
    return [{"role": "user", "slots": slots}, {"role": "user_partial", "slots": {"decodercontext": ""}}]


def train_ds_config(manifest: Path | str, seed: int) -> dict[str, Any]:
    """Plain 1-D batching by duration: the setup that grounds the twin (2-D bins did not)."""
    return {
        "use_lhotse": True,
        "tarred_audio_filepaths": None,
        "manifest_filepath": str(manifest),
        "sample_rate": SAMPLE_RATE,
        "shuffle": True,
        "num_workers": 0,
        "pin_memory": False,
        "batch_size": None,
        "batch_duration": 60,
        "quadratic_duration": 15,
        "use_bucketing": False,
        "num_buckets": 20,
        "bucket_buffer_size": 20000,
        "shuffle_buffer_size": 10000,
        "max_duration": 40.0,
        "min_duration": 0.1,
        "text_field": "text",
        "lang_field": "target_lang",
        "seed": seed,
        "shard_seed": seed,
    }


def eval_ds_config(manifest: Path | str) -> dict[str, Any]:
    """A sequential, unbucketed loader for validation and test."""
    return {
        "use_lhotse": True,
        "manifest_filepath": str(manifest),
        "sample_rate": SAMPLE_RATE,
        "batch_size": 32,
        "shuffle": False,
        "num_workers": 0,
        "pin_memory": False,
        "use_bucketing": False,
        "text_field": "text",
        "lang_field": "target_lang",
    }


def encoder_config(spec: TwinSpec) -> dict[str, Any]:
    """A FastConformer encoder: dw_striding x8 subsampling, batch-norm conv modules."""
    return {
        "_target_": "nemo.collections.asr.modules.ConformerEncoder",
        "feat_in": spec.features,
        "feat_out": -1,
        "n_layers": spec.enc_layers,
        "d_model": spec.enc_hidden,
        "subsampling": "dw_striding",
        "subsampling_factor": 8,
        "subsampling_conv_channels": spec.subsampling_channels,
        "causal_downsampling": False,
        "ff_expansion_factor": spec.enc_ff_expansion,
        "self_attention_model": "rel_pos",
        "n_heads": spec.enc_heads,
        "att_context_size": [-1, -1],
        "xscaling": False,
        "untie_biases": True,
        "pos_emb_max_len": 5000,
        "conv_kernel_size": 9,
        "conv_norm_type": "batch_norm",
        "conv_context_size": None,
        "dropout": 0.1,
        "dropout_pre_encoder": 0.1,
        "dropout_emb": 0.0,
        "dropout_att": 0.1,
    }


def decoder_config(spec: TwinSpec) -> dict[str, Any]:
    """A pre-LN transformer decoder, wider than the encoder (as in canary-180m-flash)."""
    return {
        "_target_": "nemo.collections.asr.modules.transformer.get_nemo_transformer",
        "model_name": None,
        "pretrained": False,
        "encoder": None,
        "pre_ln_final_layer_norm": True,
        "config_dict": {
            "max_sequence_length": spec.max_sequence_length,
            "num_token_types": 0,
            "embedding_dropout": 0.1,
            "learn_positional_encodings": False,
            "hidden_size": spec.dec_hidden,
            "inner_size": 4 * spec.dec_hidden,
            "num_layers": spec.dec_layers,
            "num_attention_heads": spec.dec_heads,
            "ffn_dropout": 0.1,
            "attn_score_dropout": 0.1,
            "attn_layer_dropout": 0.1,
            "hidden_act": "relu",
            "pre_ln": True,
            "vocab_size": None,
        },
    }


def model_config(spec: TwinSpec, tokenizer: dict[str, Any], manifests: dict[str, Path], seed: int) -> dict:
    """The full `model` config of a twin, written out key by key (no example yaml is installed)."""
    return {
        "sample_rate": SAMPLE_RATE,
        "label_smoothing": 0.0,
        "use_loss_mask_for_prompt": True,
        "log_prediction": True,
        "prompt_format": spec.prompt_format,
        "prompt_defaults": prompt_defaults(spec.prompt_format),
        "restore_timestamps_model": False,
        "model_defaults": {
            "asr_enc_hidden": spec.enc_hidden,
            "lm_enc_hidden": spec.dec_hidden,
            "lm_dec_hidden": spec.dec_hidden,
        },
        "multitask_metrics_cfg": copy.deepcopy(MULTITASK_METRICS),
        "train_ds": train_ds_config(manifests["train"], seed),
        "validation_ds": eval_ds_config(manifests["validation"]),
        "test_ds": None,  # a test_ds without manifest fails construction; added back before saving
        "tokenizer": tokenizer,
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "sample_rate": SAMPLE_RATE,
            "normalize": "per_feature",
            "window_size": 0.025,
            "window_stride": 0.01,
            "window": "hann",
            "features": spec.features,
            "n_fft": 512,
            "log": True,
            "frame_splicing": 1,
            "dither": 1e-5,
            "pad_to": 0,
            "pad_value": 0.0,
        },
        "spec_augment": {
            "_target_": "nemo.collections.asr.modules.SpectrogramAugmentation",
            "freq_masks": 2,
            "time_masks": 2,
            "freq_width": 15,
            "time_width": 0.05,
        },
        "encoder": encoder_config(spec),
        "transf_encoder": {
            "_target_": "nemo.collections.asr.modules.transformer.transformer_encoders.TransformerEncoder",
            "num_layers": 0,
            "hidden_size": spec.dec_hidden,
            "inner_size": 4 * spec.dec_hidden,
            "num_attention_heads": spec.dec_heads,
            "ffn_dropout": 0.1,
            "attn_score_dropout": 0.1,
            "attn_layer_dropout": 0.1,
            "mask_future": False,
            "pre_ln": True,
            "pre_ln_final_layer_norm": True,
        },
        "transf_decoder": decoder_config(spec),
        "head": {
            "_target_": "nemo.collections.asr.parts.submodules.token_classifier.TokenClassifier",
            "num_layers": 1,
            "activation": "relu",
            "log_softmax": True,
            "hidden_size": spec.dec_hidden,
            "num_classes": None,
            "dropout": 0.0,
            "use_transformer_init": True,
        },
        "decoding": {
            "strategy": "beam",
            "return_best_hypothesis": True,
            "beam": {"beam_size": 1, "len_pen": 0.0, "max_generation_delta": 50},
        },
        "loss": {
            "_target_": "nemo.collections.common.losses.smoothed_cross_entropy.SmoothedCrossEntropyLoss",
            "label_smoothing": 0.0,
        },
        "optim": {
            "name": "adamw",
            "lr": spec.lr,
            "betas": [0.9, 0.98],
            "weight_decay": 1e-3,
            "sched": {
                "name": "InverseSquareRootAnnealing",
                "warmup_steps": spec.warmup_steps,
                "warmup_ratio": None,
                "min_lr": 1e-6,
            },
        },
    }
