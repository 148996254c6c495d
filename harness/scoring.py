"""Scoring transcripts: WER (raw and normalised) and BLEU, overall, per language pair and per behaviour state.

One definition everywhere (validation, baseline, test set, reproduction), so the overall figure
and the per-pair figures of one model always agree:
- `wer`: corpus WER (word edits over reference words, jiwer) on same-language samples, text as written.
- `wer_normalized`: the same after normalising both sides: for English, Whisper's English normaliser
  first (OpenAI's rules: spelled numbers to digits, contractions expanded, fillers and bracketed words
  dropped, British spellings to American with OpenAI's table); then, every language, lower-case,
  punctuation stripped, spaces collapsed. Canary writes punctuation and capitals; speech teams compare
  normalised WER.
- `bleu`: sacreBLEU corpus BLEU (13a tokenisation, default smoothing) on translation samples, 0..1.
Overall figures are corpus figures over all pairs of their kind, not means of the per-pair ones.
Each group of lines (a pair, the lines with a custom behaviour on, those with it off) gets the same
figures from the same code: `wer/en-en`, `bleu/en-de`, `wer/terse_on`, `wer/terse_off`. (`terse=on`
would read better, but MLflow refuses `=` in metric names.)
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import jiwer
import sacrebleu

from harness.behaviours import line_states, original_source_lang
from harness.errors import DataError
from harness.manifest import manifest_lines
from harness.spec import BehaviourSpec

# What the report and MLflow call each figure; `objective.metric` picks one of the WERs or BLEU.
WER, WER_NORMALIZED, BLEU = "wer", "wer_normalized", "bleu"


@dataclass(frozen=True)
class Transcript:
    """One decoded utterance: its language pair, the reference text, the model's hypothesis and the
    state of each custom behaviour on its line (`{"terse": True}`; empty without behaviours)."""

    source_lang: str
    target_lang: str
    reference: str
    hypothesis: str
    behaviours: Mapping[str, bool] = field(default_factory=dict)

    @property
    def pair(self) -> str:
        return f"{self.source_lang}-{self.target_lang}"

    @property
    def is_translation(self) -> bool:
        return self.source_lang != self.target_lang


_BASIC = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip()])


@functools.cache
def _english_normalizer():
    """Whisper's English normaliser with its British->American spelling table, read from installed files.

    transformers (a NeMo dependency) ships OpenAI's code but loads the table from the hub
    (`normalizer.json`), out of reach offline; whisper_normalizer (NeMo's `asr` extra) ships it as
    `normalizers/english.json`, the same 1739 entries as openai-whisper's. Its own normaliser adds
    rules OpenAI's lacks ("cause" -> "because"), so only its table is used."""
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    table = resources.files("whisper_normalizer").joinpath("normalizers/english.json").read_text(encoding="utf-8")
    return EnglishTextNormalizer(json.loads(table))


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


def behaviour_group(name: str, state: bool) -> str:
    """`terse_on` / `terse_off`: the group of lines with behaviour `name` on or off, in metric names."""
    return f"{name}_{'on' if state else 'off'}"


def score(transcripts: Iterable[Transcript]) -> dict[str, float]:
    """`wer`, `wer_normalized`, `bleu`, each overall, per pair (`wer/en-en`, `bleu/en-de`) and per
    behaviour state (`wer/terse_on`); a figure with no samples of its kind is left out rather than reported as 0."""
    rows = list(transcripts)
    metrics: dict[str, float] = {}
    for kind, translation in ((WER, False), (BLEU, True)):
        for suffix, group in _groups([r for r in rows if r.is_translation == translation]).items():
            metrics.update(_figures(kind, group, suffix))
    return metrics


def _groups(rows: list[Transcript]) -> dict[str, list[Transcript]]:
    """The lines each figure is computed on, by metric-name suffix: all (`""`), each pair, each behaviour state."""
    groups: dict[str, list[Transcript]] = defaultdict(list)
    for row in rows:
        groups[""].append(row)
        groups[f"/{row.pair}"].append(row)
        for name, state in row.behaviours.items():
            groups[f"/{behaviour_group(name, state)}"].append(row)
    return dict(sorted(groups.items()))


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


def write_predictions(path: Path, transcripts: Iterable[Transcript], *, with_behaviours: bool) -> Path:
    """Transcripts as JSON lines in order (`predictions.jsonl`: validation and test runs, one format):
    `{"pair", "reference", "hypothesis"}`, and with custom behaviours the line's `behaviours` states."""
    lines = [
        json.dumps(
            {"pair": t.pair, "reference": t.reference, "hypothesis": t.hypothesis}
            | ({"behaviours": dict(t.behaviours)} if with_behaviours else {}),
            ensure_ascii=False,
        )
        for t in transcripts
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_predictions(path: Path) -> list[Transcript]:
    """A predictions file back as transcripts, in order; a line that is not one names its file and number."""
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            source, target = _languages(str(record["pair"]))
            behaviours = {str(k): bool(v) for k, v in (record.get("behaviours") or {}).items()}
            rows.append(Transcript(source, target, str(record["reference"]), str(record["hypothesis"]), behaviours))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"{path}:{number}: not a predictions line ({type(exc).__name__}: {exc}).") from None
    return rows


def _languages(pair: str) -> tuple[str, str]:
    """`en-en` -> (en, en): a same-language pair splits in its middle, so a code holding `-` reads back too."""
    half = (len(pair) - 1) // 2
    if len(pair) % 2 and pair[half] == "-" and pair[:half] == pair[half + 1 :]:
        return pair[:half], pair[:half]
    source, _, target = pair.partition("-")
    return source, target


def manifest_transcripts(
    entries: list[dict], hypotheses: list[str], text_field: str, behaviours: Mapping[str, BehaviourSpec] | None = None
) -> list[Transcript]:
    """Pair manifest lines with hypotheses; a prompted line (custom behaviours) keeps its original language
    and says which of `behaviours` are on."""
    return [
        Transcript(
            source_lang=str(original_source_lang(entry) or "?"),
            target_lang=str(entry.get("target_lang", "?")),
            reference=str(entry[text_field]),
            hypothesis=hypothesis,
            behaviours=line_states(entry, behaviours or {}),
        )
        for entry, hypothesis in zip(entries, hypotheses, strict=True)
    ]


def decode_manifest(
    model,
    manifest: Path,
    text_field: str,
    behaviours: Mapping[str, BehaviourSpec] | None = None,
    *,
    batch_size: int = 16,
) -> list[Transcript]:
    """Decode every line of `manifest` with its own prompt slots (with each line's behaviour states)."""
    entries = manifest_lines(Path(manifest))
    hypotheses = model.transcribe(str(manifest), batch_size=batch_size, verbose=False)
    texts = [h.text if hasattr(h, "text") else str(h) for h in hypotheses]
    return manifest_transcripts(entries, texts, text_field, behaviours)
