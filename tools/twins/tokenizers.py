"""The twins' tokenizer files: a special tokenizer over `special_tokens`, SentencePiece models trained on the corpora.

An "agg" twin gets a special tokenizer (`spl_tokens`) plus one BPE per language, as canary-180m-flash
and canary-1b carry them; a "unified" twin gets one SentencePiece whose user symbols are the special
tokens, as canary-1b-v2 does.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from harness.speech.corpora import LANGS, all_text
from tools.twins.config import TwinSpec

CANARY_TOKENIZER = "nemo.collections.common.tokenizers.canary_tokenizer.CanaryTokenizer"
CANARY_BPE_TOKENIZER = "nemo.collections.common.tokenizers.canary_tokenizer.CanaryBPETokenizer"


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
