"""The twins' tokenizers: Canary special vocabularies and SentencePiece models trained on the corpora.

An "agg" twin gets a special tokenizer (`spl_tokens`) plus one BPE per language, as canary-180m-flash
and canary-1b carry them; a "unified" twin gets one SentencePiece whose user symbols are the special
tokens, as canary-1b-v2 does.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.speech.corpora import LANGS, all_text

if TYPE_CHECKING:
    from tools.twins.config import TwinSpec

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
