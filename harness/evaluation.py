"""Scoring a model on a manifest, overall and per language pair (`wer/en-en`, `bleu/en-de`).

NeMo's validation gives one WER over all ASR samples and one BLEU over all translation samples;
users with several languages need each pair on its own, so the harness decodes the manifest
once more with `transcribe()` (greedy, the prompt slots taken from each manifest line) and
scores it here. Scales match NeMo's: WER and BLEU are 0..1 fractions.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import jiwer
import sacrebleu

from harness.behaviours import original_source_lang
from harness.manifest import manifest_lines


def pair_of(entry: dict) -> str:
    """`en-de`; a prompted line (custom behaviours) is named by its original source language."""
    return f"{original_source_lang(entry) or '?'}-{entry.get('target_lang', '?')}"


def score(entries: list[dict], predictions: list[str], text_field: str) -> dict[str, float]:
    """Corpus WER for same-language samples and corpus BLEU for translations, overall and per pair."""
    groups: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for entry, prediction in zip(entries, predictions, strict=True):
        pair = pair_of(entry)
        groups[pair][0].append(entry[text_field])
        groups[pair][1].append(prediction)
    metrics: dict[str, float] = {}
    for kind, same in (("wer", True), ("bleu", False)):
        refs, hyps = [], []
        for pair, (pair_refs, pair_hyps) in sorted(groups.items()):
            if (pair.split("-")[0] == pair.split("-")[1]) != same:
                continue
            metrics[f"{kind}/{pair}"] = _metric(kind, pair_refs, pair_hyps)
            refs += pair_refs
            hyps += pair_hyps
        if refs:
            metrics[kind] = _metric(kind, refs, hyps)
    return metrics


def _metric(kind: str, refs: list[str], hyps: list[str]) -> float:
    if kind == "wer":
        return float(jiwer.wer(refs, hyps)) if any(r.strip() for r in refs) else 0.0
    return sacrebleu.corpus_bleu(hyps, [refs], tokenize="13a").score / 100


def evaluate_manifest(model, manifest: Path, text_field: str, *, batch_size: int = 16) -> dict[str, float]:
    """Decode every line of `manifest` with its own prompt slots and score it."""
    entries = manifest_lines(Path(manifest))
    hypotheses = model.transcribe(str(manifest), batch_size=batch_size, verbose=False)
    predictions = [h.text if hasattr(h, "text") else str(h) for h in hypotheses]
    return score(entries, predictions, text_field)
