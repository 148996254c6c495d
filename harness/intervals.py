"""How sure a change is: paired bootstrap intervals over utterances (Bisani & Ney 2004).

Two systems scored on the same lines (the best trial and the zero-shot baseline or the runner-up) differ
by one figure on one set; resampling the lines with replacement, the same lines for both, and recomputing
both corpus figures per resample gives the spread of that difference the test set's size allows. An
interval that includes 0 means the set cannot tell the two apart. Figures are `harness.scoring`'s: WER
(as written and normalised) on same-language lines, sacreBLEU BLEU on translation lines, overall and per
language pair (each pair resampled within itself). Statistics are taken once per line (word edits,
BLEU n-gram counts), so a resample is a weighted sum: 2000 lines x 1000 resamples take well under a second.

Resample r of a figure over n lines draws `numpy.random.default_rng(seed).integers(0, n, (resamples, n))[r]`:
a fresh Generator per figure, so any figure can be recomputed on its own from the seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np
import optuna
from sacrebleu.metrics import BLEU as BleuMetric

from harness.errors import DataError
from harness.names import (
    BASELINE_DIR,
    TEST_ATTR,
    TEST_BASELINE_ATTR,
    TEST_BASELINE_DIR,
    TEST_DIR,
    TEST_RUNNER_UP_ATTR,
    TEST_RUNNER_UP_DIR,
    run_name,
)
from harness.scoring import BLEU, WER, WER_NORMALIZED, Transcript, normalize, read_predictions
from harness.spec import SweepSpec
from harness.study import best_trial, runner_up
from harness.trial_dir import TrialDir

DEFAULT_RESAMPLES = 1000
LEVEL = 0.95  # percentile interval: the middle 95% of the resampled differences
_LABELS = {WER: "WER", WER_NORMALIZED: "normalised WER", BLEU: "BLEU"}


@dataclass(frozen=True)
class Interval:
    """B minus A on one figure (`wer`, `bleu/en-de`) over `lines` paired lines, with its 95% interval;
    `resamples` and `seed` are part of it, so the numbers can be recomputed."""

    figure: str
    delta: float
    low: float
    high: float
    resamples: int
    seed: int
    lines: int

    @property
    def includes_zero(self) -> bool:
        """The set cannot tell A from B on this figure."""
        return self.low <= 0.0 <= self.high

    @property
    def text(self) -> str:
        """`-0.083 WER [-0.110, -0.057]`, with the pair after the figure's word and a note when 0 is inside."""
        kind, _, group = self.figure.partition("/")
        label = " ".join([_LABELS.get(kind, kind), *([group] if group else [])])
        note = " (includes 0: not separable)" if self.includes_zero else ""
        return f"{self.delta:+.3f} {label} [{self.low:.3f}, {self.high:.3f}]{note}"

    def __str__(self) -> str:
        return self.text


def compare_files(a: Path, b: Path, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict[str, Interval]:
    """Two predictions files (`TrialDir.predictions`), paired line by line: B minus A per figure."""
    return compare(read_predictions(a), read_predictions(b), resamples=resamples, seed=seed, names=(str(a), str(b)))


def compare(
    a: Sequence[Transcript],
    b: Sequence[Transcript],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    names: tuple[str, str] = ("A", "B"),
) -> dict[str, Interval]:
    """B minus A on every figure `scoring.score` gives overall and per pair (behaviour groups left out):
    `wer`, `wer_normalized`, `wer/en-en`, `bleu`, `bleu/en-de`. A and B must be the same lines in the same order."""
    _check_paired(a, b, names)
    intervals: dict[str, Interval] = {}
    drawn: dict[int, np.ndarray] = {}
    for translation in (False, True):
        pairs = [(x, y) for x, y in zip(a, b, strict=True) if x.is_translation == translation]
        if not pairs:
            continue
        tables = {BLEU: _bleu(pairs)} if translation else {WER: _wer(pairs, False), WER_NORMALIZED: _wer(pairs, True)}
        labels = np.array([x.pair for x, _ in pairs])
        groups = {"": np.arange(len(pairs))} | {f"/{p}": np.flatnonzero(labels == p) for p in sorted(set(labels))}
        for suffix, rows in groups.items():
            for kind, (table, statistic) in tables.items():
                weights = drawn.get(len(rows))
                if weights is None:  # the same for every figure over as many lines: drawn once
                    weights = drawn[len(rows)] = _weights(len(rows), resamples, seed)
                intervals[kind + suffix] = _interval(kind + suffix, table[rows], statistic, weights, seed)
    return intervals


def _check_paired(a: Sequence[Transcript], b: Sequence[Transcript], names: tuple[str, str]) -> None:
    """The same lines in the same order, or no comparison: a paired bootstrap pairs by position."""
    first, second = names
    if len(a) != len(b):
        raise DataError(
            f"{first} ({len(a)} lines) and {second} ({len(b)} lines) cannot be compared: not the same lines."
        )
    for number, (x, y) in enumerate(zip(a, b, strict=True), start=1):
        if (x.pair, x.reference) != (y.pair, y.reference):
            raise DataError(
                f"{first} and {second} differ at line {number} ({x.pair} {x.reference!r} against {y.pair} "
                f"{y.reference!r}): they must score the same manifest in the same order."
            )


# A figure's per-line table (one row per line) and the statistic of its column sums: B minus A per resample.
Counted = tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]


def _wer(pairs: list[tuple[Transcript, Transcript]], normalized: bool) -> Counted:
    """Columns: reference words, A's word edits, B's word edits, from jiwer's alignments per line (their sums
    are jiwer's corpus counts, `scoring.corpus_wer`); text as written, or both sides `scoring.normalize`d."""

    def text(value: str, line: Transcript) -> str:
        return normalize(value, line.target_lang) if normalized else value

    references = [text(x.reference, x) for x, _ in pairs]
    outputs = [
        jiwer.process_words(references, [text(line.hypothesis, line) for line in side]) for side in _sides(pairs)
    ]
    words = [len(line) for line in outputs[0].references]
    edits = [[sum(_edits(chunk) for chunk in line) for line in output.alignments] for output in outputs]

    def statistic(sums: np.ndarray) -> np.ndarray:
        """No reference words (all lines empty): 0 without insertions, else 1, as `scoring.corpus_wer`."""
        total = sums[:, 0]
        rates = [np.where(total > 0, sums[:, k] / np.maximum(total, 1), sums[:, k] > 0) for k in (1, 2)]
        return rates[1] - rates[0]

    return np.array([words, *edits], dtype=float).T, statistic


def _sides(pairs: list[tuple[Transcript, Transcript]]) -> tuple[list[Transcript], list[Transcript]]:
    return [x for x, _ in pairs], [y for _, y in pairs]


def _edits(chunk) -> int:
    """Word edits in one alignment chunk: substitutions, deletions, insertions (0 for a match)."""
    if chunk.type == "equal":
        return 0
    return max(chunk.ref_end_idx - chunk.ref_start_idx, chunk.hyp_end_idx - chunk.hyp_start_idx)


def _bleu(pairs: list[tuple[Transcript, Transcript]]) -> Counted:
    """Columns: sacreBLEU's per-sentence sufficient statistics (lengths, n-gram matches and totals) of A, then
    of B, the ones its corpus score sums, under `scoring.corpus_bleu`'s settings; scored 0..1 per resample.
    Both steps are sacreBLEU's own (private) methods, the ones its `corpus_score` and paired tests call."""
    metric = BleuMetric(tokenize="13a")
    references = [[x.reference for x, _ in pairs]]
    sides = [
        metric._extract_corpus_statistics([line.hypothesis for line in side], references) for side in _sides(pairs)
    ]
    width = len(sides[0][0])

    def score(row: np.ndarray) -> float:
        return metric._compute_score_from_stats([int(v) for v in row]).score / 100

    def statistic(sums: np.ndarray) -> np.ndarray:
        return np.array([score(row[width:]) - score(row[:width]) for row in sums])

    return np.hstack([np.array(side, dtype=float) for side in sides]), statistic


def _weights(lines: int, resamples: int, seed: int) -> np.ndarray:
    """How often each resample draws each line (resamples x lines), from the documented draws."""
    draws = np.random.default_rng(seed).integers(0, lines, size=(resamples, lines))
    offsets: np.ndarray = (np.arange(resamples) * lines)[:, None]  # each resample counts into its own row
    counts = np.bincount((draws + offsets).ravel(), minlength=resamples * lines)
    return counts.reshape(resamples, lines).astype(float)


def _interval(figure: str, table: np.ndarray, statistic, weights: np.ndarray, seed: int) -> Interval:
    """The difference on all lines, and the percentile interval of its resampled values (a resample's column
    sums are its weights times the table)."""
    delta = float(statistic(table.sum(axis=0, keepdims=True))[0])
    low, high = np.percentile(statistic(weights @ table), [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    return Interval(figure, delta, float(low), float(high), len(weights), seed, len(table))


# -- a sweep's comparisons ------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """The best trial (B) against another system (A) on one set; `missing` says why there are no intervals."""

    split: str  # val | test
    other: str  # baseline | runner_up
    label: str  # the zero-shot baseline, trial-0003 (runner-up)
    intervals: dict[str, Interval]
    missing: str = ""


def sweep_comparisons(spec: SweepSpec, study: optuna.Study, *, resamples: int = DEFAULT_RESAMPLES) -> list[Comparison]:
    """The best trial against the zero-shot baseline and the runner-up, on the validation set (each process's
    last validation) and the test set (the test runs), from their predictions files, seeded with
    `training.seed`. The sweep logs them on its parent run and the report shows them: one computation."""
    best = best_trial(study)
    if best is None:
        return []
    runner, attrs = runner_up(study), study.user_attrs

    def test_file(attr: str, folder: str, number: int | None) -> Path | None:
        """A test run's predictions, if that run scored this system (not an earlier best)."""
        scored = spec.data.test is not None and attr in attrs and attrs[attr].get("trial") == number
        return TrialDir.of(spec, folder).predictions if scored else None

    def compared(split: str, other: str, label: str, a: Path | None, b: Path | None) -> Comparison:
        if a is None or b is None:
            return Comparison(split, other, label, {}, "not scored on the test set")
        missing = next((f"{file} not written" for file in (a, b) if not file.is_file()), "")
        try:
            found = {} if missing else compare_files(a, b, resamples=resamples, seed=spec.training.seed)
        except DataError as exc:
            found, missing = {}, str(exc)
        return Comparison(split, other, label, found, missing)

    best_val, best_test = TrialDir.of(spec, best.number).predictions, test_file(TEST_ATTR, TEST_DIR, best.number)
    baseline = "the zero-shot baseline"
    comparisons = [compared("val", "baseline", baseline, TrialDir.of(spec, BASELINE_DIR).predictions, best_val)]
    if runner is not None:
        label, folder = f"{run_name(runner.number)} (runner-up)", TrialDir.of(spec, runner.number)
        comparisons.append(compared("val", "runner_up", label, folder.predictions, best_val))
    if spec.data.test is not None:
        baseline_test = test_file(TEST_BASELINE_ATTR, TEST_BASELINE_DIR, None)
        comparisons.append(compared("test", "baseline", baseline, baseline_test, best_test))
        if runner is not None:
            runner_test = test_file(TEST_RUNNER_UP_ATTR, TEST_RUNNER_UP_DIR, runner.number)
            comparisons.append(compared("test", "runner_up", label, runner_test, best_test))
    return comparisons
