"""The recipe that builds and pretrains the small Canary twins shipped with the harness.

A twin is a scaled-down model of a released Canary family member: same class, prompt format,
tokenizer layout and config quirks, small enough to pretrain on a CPU on synthetic speech.
It is pretrained plainly (1-D batches by duration, `text_field: text`), then the quirks of a
released checkpoint are written into the saved config so the harness meets them for real.

    python -m harness.twins --name canary-tiny --out harness/assets/canary-tiny.nemo

canary-tiny: 2500 steps took 17 min on 2 shared CPU cores (0.34 s/step) and gave 1.8% WER and
BLEU 94 on held-out commands, 84% WER zero-shot on the demo domain. When other torch processes
share the cores, run with OMP_WAIT_POLICY=PASSIVE: spinning OpenMP threads made steps 5-10x slower.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from harness.canary import MULTITASK_METRICS
from harness.spec import TrainingSpec
from harness.speech.corpora import LANGS, all_text
from harness.speech.datasets import build_demo_data, build_pretrain_data
from harness.training import build_trainer

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORK_DIR = REPO_ROOT / "build"
SAMPLE_RATE = 16000

CANARY_TOKENIZER = "nemo.collections.common.tokenizers.canary_tokenizer.CanaryTokenizer"
CANARY_BPE_TOKENIZER = "nemo.collections.common.tokenizers.canary_tokenizer.CanaryBPETokenizer"

# ISO 639-1 codes in the order of NeMo's build_canary_2_special_tokenizer.py, so token ids of the
# twin's special tokenizer match those of the released canary2 models.
ISO_639_1 = (  # noqa: SIM905 (as a list literal this would be 183 lines)
    "aa ab af ak sq am ar an hy as av ae ay az bm ba eu be bn bi bs br bg my ca ch ce ny zh cu cv kw co "
    "cr hr cs da dv nl dz en eo et ee fo fj fi fr fy ff gd gl lg ka de el kl gn gu ht ha he hz hi ho hu "
    "is io ig id ia ie iu ik ga it ja jv kn kr ks kk km ki rw ky kv kg ko kj ku lo la lv li ln lt lu lb "
    "mk mg ms ml mt gv mi mr mh mn na nv nd nr ng ne no nb nn oc oj or om os pi ps fa pl pt pa qu ro rm "
    "rn ru se sm sg sa sc sr sn sd si sk sl so st es su sw ss sv tl ty tg ta tt te th bo ti to ts tn tr "
    "tk tw ug uk ur uz ve vi vo wa cy wo xh ii yi yo za zu"
).split()

CANARY2_GENERIC_TOKENS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|nopnc|>",
    "<|pnc|>",
    "<|nospeech|>",
    "<|startofcontext|>",
    "<|itn|>",
    "<|noitn|>",
    "<|timestamp|>",
    "<|notimestamp|>",
    "<|diarize|>",
    "<|nodiarize|>",
    "<|spkchange|>",
    "<|audioseparator|>",
    "<|emo:undefined|>",
    "<|emo:neutral|>",
    "<|emo:happy|>",
    "<|emo:sad|>",
    "<|emo:angry|>",
]
CANARY1_GENERIC_TOKENS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|transcribe|>",
    "<|translate|>",
    "<|nopnc|>",
    "<|pnc|>",
    "<|nospeech|>",
]


# ---------------------------------------------------------------------------------------------
# Special tokens
# ---------------------------------------------------------------------------------------------


def canary2_special_tokens() -> list[str]:
    """The canary2 special vocabulary: padded with `<|spltokenN|>` to 1152 pieces (30 spltokens)."""
    tokens = (
        CANARY2_GENERIC_TOKENS
        + ["<|unklang|>"]
        + [f"<|{code}|>" for code in ISO_639_1]
        + [f"<|{i}|>" for i in range(900)]
        + [f"<|spk{i}|>" for i in range(16)]
    )
    counted = len(tokens) + 3  # SentencePiece adds <pad>, <unk> and the word boundary piece
    padded = 64 * math.ceil(counted / 64)
    return tokens + [f"<|spltoken{i}|>" for i in range(padded - counted)]


def canary1_special_tokens() -> list[str]:
    """The canary-1b special vocabulary: task tokens, four languages and 16 spltokens."""
    languages = [f"<|{code}|>" for code in ("en", "es", "de", "fr")]
    return CANARY1_GENERIC_TOKENS + languages + [f"<|spltoken{i}|>" for i in range(16)]


# ---------------------------------------------------------------------------------------------
# Twin specifications
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------


def _fresh_dir(path: Path) -> Path:
    """NeMo skips training when tokenizer.model exists (and force_rebuild is broken): start clean."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def build_special_tokenizer(tokens: list[str], out_dir: Path, expected_vocab: int | None) -> Path:
    """Build the `spl_tokens` SentencePiece model, asserting the released vocabulary size."""
    from nemo.collections.common.tokenizers.canary_tokenizer import CanaryTokenizer

    tokenizer = CanaryTokenizer.build_special_tokenizer(tokens, _fresh_dir(out_dir))
    if expected_vocab is not None and tokenizer.vocab_size != expected_vocab:
        raise AssertionError(f"Special tokenizer has {tokenizer.vocab_size} pieces, expected {expected_vocab}.")
    return out_dir


def train_subword_tokenizer(
    lines: list[str], out_dir: Path, vocab_size: int, user_symbols: list[str] | None = None
) -> Path:
    """Train a BPE SentencePiece model; NeMo's helper also writes the vocab.txt that restore needs."""
    from nemo.collections.common.tokenizers.sentencepiece_tokenizer import create_spt_model

    out_dir = _fresh_dir(out_dir)
    text_path = out_dir / "text.txt"
    text_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    create_spt_model(
        str(text_path),
        vocab_size=vocab_size,
        sample_size=-1,
        do_lower_case=False,
        tokenizer_type="bpe",
        output_dir=str(out_dir),
        character_coverage=1.0,
        user_defined_symbols=user_symbols,
    )
    return out_dir


def build_tokenizers(spec: TwinSpec, tok_dir: Path) -> dict[str, Any]:
    """Build the twin's tokenizer files and return the `model.tokenizer` config section."""
    if spec.tokenizer == "unified":
        from nemo.collections.common.tokenizers.canary_tokenizer import DEFAULT_TOKENS

        symbols = list(dict.fromkeys(DEFAULT_TOKENS + spec.special_tokens()))
        lines = [line for lang in LANGS for line in all_text(lang)]
        unified = train_subword_tokenizer(lines, tok_dir / "unified", len(symbols) + spec.subword_vocab, symbols)
        return {"dir": str(unified), "type": "bpe", "custom_tokenizer": {"_target_": CANARY_BPE_TOKENIZER}}
    langs = {
        "spl_tokens": build_special_tokenizer(spec.special_tokens(), tok_dir / "spl_tokens", spec.special_vocab_size)
    }
    for lang in LANGS:
        langs[lang] = train_subword_tokenizer(all_text(lang), tok_dir / lang, spec.subword_vocab)
    return {
        "dir": None,
        "type": "agg",
        "langs": {lang: {"dir": str(path), "type": "bpe"} for lang, path in langs.items()},
        "custom_tokenizer": {"_target_": CANARY_TOKENIZER, "tokenizers": None},
    }


# ---------------------------------------------------------------------------------------------
# Model config
# ---------------------------------------------------------------------------------------------


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
    batching, cut concatenation, speed and noise augmentation, a tokens-per-second filter,
    validation buckets and absolute hold steps.

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
        )
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


# ---------------------------------------------------------------------------------------------
# Training and evaluation
# ---------------------------------------------------------------------------------------------


class ProgressPrinter(pl.Callback):
    """Print loss, speed and batch size every few hundred steps: pretraining runs unattended."""

    def __init__(self, every: int = 100) -> None:
        self.every = every
        self.last_time = time.monotonic()
        self.cuts = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.cuts += len(batch.cuts)
        step = trainer.global_step
        if step % self.every or not isinstance(outputs, dict) or "loss" not in outputs:
            return
        now = time.monotonic()
        print(
            f"step {step:5d}  loss {float(outputs['loss']):.3f}  {(now - self.last_time) / self.every:.2f} s/step"
            f"  {self.cuts / self.every:.1f} utterances/batch",
            flush=True,
        )
        self.last_time, self.cuts = now, 0

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = {key: float(value) for key, value in trainer.callback_metrics.items() if key.startswith("val_")}
        print(
            f"step {trainer.global_step:5d}  " + "  ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())),
            flush=True,
        )


def evaluate(model: Any, trainer: Any, manifest: Path) -> dict[str, float]:
    """WER (en->en) as a fraction and BLEU (en->de) on 0..100 for one manifest."""
    from omegaconf import DictConfig

    model.setup_validation_data(DictConfig(eval_ds_config(manifest)))
    results = trainer.validate(model, verbose=False)[0]
    return {"wer": float(results["val_wer"]), "bleu": 100.0 * float(results["val_bleu"])}


def pretrain(spec: TwinSpec, *, work_dir: Path, steps: int, seed: int):
    """Build tokenizers, data and model, then train it; returns (model, trainer, manifests)."""
    from nemo.collections.asr.models import EncDecMultiTaskModel
    from omegaconf import OmegaConf

    pl.seed_everything(seed, workers=True)
    manifests = build_pretrain_data(work_dir / "corpora" / "commands", seed=seed)
    tokenizer = build_tokenizers(spec, work_dir / "twins" / spec.name / "tokenizers")
    cfg = OmegaConf.create(model_config(spec, tokenizer, manifests, seed))
    trainer = build_trainer(
        TrainingSpec(), max_steps=steps, val_check_interval=min(500, steps), callbacks=[ProgressPrinter()]
    )
    model = EncDecMultiTaskModel(cfg=cfg, trainer=trainer)
    print(f"{spec.name}: {count_parameters(model):,} parameters, vocabulary {model.tokenizer.vocab_size}", flush=True)
    started = time.monotonic()
    trainer.fit(model)
    print(f"pretraining took {time.monotonic() - started:.0f} s for {steps} steps", flush=True)
    return model, trainer, manifests


def count_parameters(model: Any) -> int:
    """All parameters (the tied embedding/head counted once)."""
    return sum(p.numel() for p in model.parameters())


def report_metrics(model: Any, trainer: Any, manifests: dict[str, Path], demo: dict[str, Path]) -> dict:
    """In-domain test (held-out commands) and zero-shot demo (home, unseen voices) metrics."""
    results = {
        "in-domain commands/test": evaluate(model, trainer, manifests["test"]),
        "zero-shot home/validation": evaluate(model, trainer, demo["validation"]),
    }
    for name, metrics in results.items():
        print(f"{name}: WER {100 * metrics['wer']:.1f}%  BLEU {metrics['bleu']:.1f}", flush=True)
    return results


def save_released(model: Any, name: str, out: Path) -> Path:
    """Write the released quirks into the config and save the archive (tokenizers become `nemo:`)."""
    apply_release_quirks(model.cfg, name)
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save_to(str(out))
    return out


def verify_archive(path: Path) -> None:
    """Restore in a fresh process, as a user would: a same-process check would hide path problems."""
    command = [sys.executable, "-m", "harness.twins", "--verify", str(path)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    print(result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "", flush=True)
    if result.returncode != 0:
        raise RuntimeError(f"Restoring {path} in a fresh process failed:\n{result.stderr[-4000:]}")


def check_restored(path: Path) -> None:
    """Restore the archive and check that its tokenizer paths point inside it."""
    from nemo.collections.asr.models import EncDecMultiTaskModel

    model = EncDecMultiTaskModel.restore_from(str(path), map_location="cpu")
    tokenizer_cfg = model.cfg.tokenizer
    entries = tokenizer_cfg.langs.values() if tokenizer_cfg.get("langs") else [tokenizer_cfg]
    bad = [entry.get("model_path") for entry in entries if not str(entry.get("model_path")).startswith("nemo:")]
    if bad:
        raise AssertionError(f"{path}: tokenizer model paths {bad} do not point inside the archive.")
    if "multitask_metrics_cfg" in model.cfg or model.cfg.train_ds.text_field != "answer":
        raise AssertionError(f"{path}: the released quirks are missing from the saved config.")
    print(
        f"verified {path}: {count_parameters(model):,} parameters, prompt {model.cfg.prompt_format}, "
        f"tokenizer {tokenizer_cfg.type}, model_path {next(iter(entries)).model_path}"
    )


def build_twin(
    name: str = "canary-tiny", *, out: Path, work_dir: Path, steps: int, seed: int = 0, evaluate_model: bool = True
) -> Path:
    """Build, pretrain, evaluate, save and verify one twin; returns the `.nemo` path.

    `evaluate_model=False` skips the held-out evaluation: the structural twins (v1, v2) are
    shipped to test format handling, not accuracy, and decoding an untrained model is only slow.
    """
    spec, work_dir = twin_spec(name), Path(work_dir).resolve()
    model, trainer, manifests = pretrain(spec, work_dir=work_dir, steps=steps, seed=seed)
    if evaluate_model:
        metrics = report_metrics(model, trainer, manifests, build_demo_data(work_dir / "corpora" / "home"))
        metrics_path = work_dir / "twins" / name / "metrics.json"
        metrics_path.write_text(json.dumps({"steps": steps, "seed": seed, **metrics}, indent=2))
    out = save_released(model, name, out)
    print(f"saved {out} ({out.stat().st_size / 1e6:.1f} MB)", flush=True)
    verify_archive(out)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m harness.twins", description=__doc__.split("\n")[0])
    parser.add_argument("--name", default="canary-tiny", choices=sorted(TWINS))
    parser.add_argument("--out", type=Path, help="where to write the .nemo (default harness/assets/<name>.nemo)")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="corpora and tokenizers")
    parser.add_argument("--steps", type=int, default=2500, help="pretraining steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verify", type=Path, help="only restore this .nemo and check it")
    parser.add_argument("--skip-eval", action="store_true", help="skip the held-out evaluation (structural twins)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.verify is not None:
        check_restored(args.verify)
        return 0
    out = args.out or REPO_ROOT / "harness" / "assets" / f"{args.name}.nemo"
    build_twin(
        args.name, out=out, work_dir=args.work_dir, steps=args.steps, seed=args.seed, evaluate_model=not args.skip_eval
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
