"""The recipe that builds and pretrains the small Canary twins shipped with the harness.

A twin is a scaled-down model of a released Canary family member: same class, prompt format,
tokenizer layout and config quirks, small enough to pretrain on a CPU on synthetic speech.
It is pretrained plainly (1-D batches by duration, `text_field: text`), then the quirks of a
released checkpoint are written into the saved config so the harness meets them for real.

    python -m tools.twins --name canary-tiny --out harness/assets/canary-tiny.nemo

It needs a source checkout (run it from the repo root) and is not shipped: only its output, the
`.nemo` files in harness/assets, is. Modules by concern: `special_tokens` (Canary's special
vocabularies), `tokenizers` (the tokenizer files, SentencePiece), `config` (`TwinSpec`, the NeMo model
config), `release` (released-config quirks), `pretraining` (train, evaluate, save, verify), `cli`.
Import the names below from `tools.twins`.

canary-tiny: 2500 steps took 17 min on 2 shared CPU cores (0.34 s/step) and gave 1.8% WER and
BLEU 94 on held-out commands, 84% WER zero-shot on the demo domain (92% on the
demo data `harness demo-data` writes today: 800/48/96 lines, half translated). When other torch processes
share the cores, run with OMP_WAIT_POLICY=PASSIVE: spinning OpenMP threads made steps 5-10x slower.
"""

from tools.twins.cli import main, parse_args
from tools.twins.config import (
    SAMPLE_RATE,
    TWINS,
    TwinSpec,
    decoder_config,
    encoder_config,
    eval_ds_config,
    model_config,
    prompt_defaults,
    train_ds_config,
    twin_spec,
)
from tools.twins.paths import ASSETS_DIR, DEFAULT_WORK_DIR, REPO_ROOT
from tools.twins.pretraining import (
    ProgressPrinter,
    build_twin,
    check_restored,
    count_parameters,
    evaluate,
    pretrain,
    report_metrics,
    save_released,
    verify_archive,
)
from tools.twins.release import (
    CLUSTER_DATA,
    RELEASED_BUCKET_BATCH_SIZE,
    RELEASED_BUCKET_BINS,
    apply_overriding_keys,
    apply_release_quirks,
    rewrite_config,
)
from tools.twins.special_tokens import canary1_special_tokens, canary2_special_tokens
from tools.twins.tokenizers import (
    CANARY_BPE_TOKENIZER,
    CANARY_TOKENIZER,
    build_special_tokenizer,
    build_tokenizers,
    train_subword_tokenizer,
)

__all__ = [
    "ASSETS_DIR",
    "CANARY_BPE_TOKENIZER",
    "CANARY_TOKENIZER",
    "CLUSTER_DATA",
    "DEFAULT_WORK_DIR",
    "RELEASED_BUCKET_BATCH_SIZE",
    "RELEASED_BUCKET_BINS",
    "REPO_ROOT",
    "SAMPLE_RATE",
    "TWINS",
    "ProgressPrinter",
    "TwinSpec",
    "apply_overriding_keys",
    "apply_release_quirks",
    "build_special_tokenizer",
    "build_tokenizers",
    "build_twin",
    "canary1_special_tokens",
    "canary2_special_tokens",
    "check_restored",
    "count_parameters",
    "decoder_config",
    "encoder_config",
    "eval_ds_config",
    "evaluate",
    "main",
    "model_config",
    "parse_args",
    "pretrain",
    "prompt_defaults",
    "report_metrics",
    "rewrite_config",
    "save_released",
    "train_ds_config",
    "train_subword_tokenizer",
    "twin_spec",
    "verify_archive",
]
