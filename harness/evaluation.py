"""Scoring transcripts: WER (raw and normalised) and BLEU, overall and per language pair.

One definition everywhere (validation, baseline, test set, reproduction), so the overall figure
and the per-pair figures of one model always agree:
- `wer`: corpus WER (word edits over reference words, jiwer) on same-language samples, text as written.
- `wer_normalized`: the same after normalising both sides: lower-case, punctuation stripped, spaces
  collapsed, and for English Whisper's English normaliser first (numbers, contractions, fillers).
  Canary writes punctuation and capitals; speech teams compare normalised WER.
- `bleu`: sacreBLEU corpus BLEU (13a tokenisation, default smoothing) on translation samples, 0..1.
Overall figures are corpus figures over all pairs of their kind, not means of the per-pair ones.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import jiwer
import sacrebleu

from harness.behaviours import original_source_lang
from harness.manifest import manifest_lines

# What the report and MLflow call each figure; `objective.metric` picks one of the WERs or BLEU.
WER, WER_NORMALIZED, BLEU = "wer", "wer_normalized", "bleu"


@dataclass(frozen=True)
class Transcript:
    """One decoded utterance: its language pair, the reference text and the model's hypothesis."""

    source_lang: str
    target_lang: str
    reference: str
    hypothesis: str

    @property
    def pair(self) -> str:
        return f"{self.source_lang}-{self.target_lang}"

    @property
    def is_translation(self) -> bool:
        return self.source_lang != self.target_lang


_BASIC = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip()])


@functools.cache
def _english_normalizer():
    """Whisper's English normaliser, shipped with transformers (a NeMo dependency): no extra install."""
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer({})


def normalize(text: str, lang: str) -> str:
    """Text as WER should compare it: English through Whisper's normaliser, then jiwer's basic rules."""
    if lang == "en":
        text = _english_normalizer()(text)
    return _BASIC(text)


def corpus_wer(references: list[str], hypotheses: list[str]) -> float:
    """Word edits over reference words, over the whole corpus (0..1+; empty references count insertions)."""
    if not references:
        return float("nan")
    words = sum(len(r.split()) for r in references)
    if words == 0:
        return 0.0 if not any(h.split() for h in hypotheses) else 1.0
    return float(jiwer.wer(references, hypotheses))


def corpus_bleu(references: list[str], hypotheses: list[str]) -> float:
    """sacreBLEU corpus BLEU as a 0..1 fraction (the scale NeMo logs)."""
    return sacrebleu.corpus_bleu(hypotheses, [references], tokenize="13a").score / 100


def score(transcripts: Iterable[Transcript]) -> dict[str, float]:
    """`wer`, `wer_normalized`, `bleu`, each overall and per pair (`wer/en-en`, `bleu/en-de`); a kind with
    no samples is left out rather than reported as 0."""
    by_pair: dict[str, list[Transcript]] = defaultdict(list)
    for transcript in transcripts:
        by_pair[transcript.pair].append(transcript)
    metrics: dict[str, float] = {}
    for kind, translation in ((WER, False), (BLEU, True)):
        groups = {pair: rows for pair, rows in sorted(by_pair.items()) if rows[0].is_translation == translation}
        if not groups:
            continue
        for suffix, rows in [*((f"/{pair}", rows) for pair, rows in groups.items()), ("", _flatten(groups))]:
            metrics.update(_figures(kind, rows, suffix))
    return metrics


def _flatten(groups: dict[str, list[Transcript]]) -> list[Transcript]:
    return [row for rows in groups.values() for row in rows]


def _figures(kind: str, rows: list[Transcript], suffix: str) -> dict[str, float]:
    references, hypotheses = [r.reference for r in rows], [r.hypothesis for r in rows]
    if kind == BLEU:
        return {f"{BLEU}{suffix}": corpus_bleu(references, hypotheses)}
    return {
        f"{WER}{suffix}": corpus_wer(references, hypotheses),
        f"{WER_NORMALIZED}{suffix}": corpus_wer(
            [normalize(r.reference, r.target_lang) for r in rows],
            [normalize(r.hypothesis, r.target_lang) for r in rows],
        ),
    }


def manifest_transcripts(entries: list[dict], hypotheses: list[str], text_field: str) -> list[Transcript]:
    """Pair manifest lines with hypotheses; a prompted line (custom behaviours) keeps its original language."""
    return [
        Transcript(
            source_lang=str(original_source_lang(entry) or "?"),
            target_lang=str(entry.get("target_lang", "?")),
            reference=str(entry[text_field]),
            hypothesis=hypothesis,
        )
        for entry, hypothesis in zip(entries, hypotheses, strict=True)
    ]


def evaluate_manifest(model, manifest: Path, text_field: str, *, batch_size: int = 16) -> dict[str, float]:
    """Decode every line of `manifest` with its own prompt slots and score it (the test set)."""
    entries = manifest_lines(Path(manifest))
    hypotheses = model.transcribe(str(manifest), batch_size=batch_size, verbose=False)
    texts = [h.text if hasattr(h, "text") else str(h) for h in hypotheses]
    return score(manifest_transcripts(entries, texts, text_field))
