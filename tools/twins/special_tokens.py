"""The Canary special vocabularies a twin carries: canary2's 1152 pieces (30 `<|spltokenN|>`) and canary-1b's."""

from __future__ import annotations

import math

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
