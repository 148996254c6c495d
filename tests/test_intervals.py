"""Paired bootstrap intervals (`harness.intervals`): checked by hand and against sacreBLEU, no training."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import optuna
import pytest
import sacrebleu
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import create_trial

from harness.errors import DataError
from harness.intervals import Interval, compare, compare_files, sweep_comparisons
from harness.names import BASELINE_DIR, TEST_ATTR, TEST_BASELINE_ATTR, TEST_BASELINE_DIR, TEST_DIR
from harness.report._blocks import Table, Text
from harness.report._intervals import interval_blocks
from harness.scoring import Transcript, corpus_wer, read_predictions, score, write_predictions
from harness.spec import load_spec
from harness.study import runner_up
from harness.sweep._evaluations import Evaluations
from harness.trial_dir import TrialDir
from tests.conftest import spec_dict, write_spec

# Four English lines with edits known by hand: (reference, A's hypothesis, B's hypothesis).
LINES = [
    ("a b c d", "a b c d", "a x c d"),  # 4 words; A 0 edits, B 1 substitution
    ("e f", "e", "e f"),  # 2 words; A 1 deletion, B 0
    ("g h i", "g h i j", "g h i"),  # 3 words; A 1 insertion, B 0
    ("k l m n o", "k l m n o", "k l m n o"),  # 5 words; 0 and 0
]
WORDS, EDITS_A, EDITS_B = [4, 2, 3, 5], [0, 1, 1, 0], [1, 0, 0, 0]


def _systems(lines, pair: tuple[str, str] = ("en", "en")) -> tuple[list[Transcript], list[Transcript]]:
    source, target = pair
    a = [Transcript(source, target, reference, hyp_a) for reference, hyp_a, _ in lines]
    b = [Transcript(source, target, reference, hyp_b) for reference, _, hyp_b in lines]
    return a, b


def test_the_wer_interval_is_the_hand_computed_paired_bootstrap():
    """The same lines drawn for A and B, with the documented draws; each resample's corpus WER difference
    from the known edit counts, in plain arithmetic and through `scoring.corpus_wer` on the drawn lines."""
    a, b = _systems(LINES)
    resamples, seed = 7, 11
    found = compare(a, b, resamples=resamples, seed=seed)["wer"]

    draws = np.random.default_rng(seed).integers(0, 4, size=(resamples, 4))
    by_hand = []
    for row in draws.tolist():
        words = sum(WORDS[i] for i in row)
        by_hand.append(sum(EDITS_B[i] for i in row) / words - sum(EDITS_A[i] for i in row) / words)
        references = [LINES[i][0] for i in row]
        through_scoring = corpus_wer(references, [LINES[i][2] for i in row]) - corpus_wer(
            references, [LINES[i][1] for i in row]
        )
        assert through_scoring == pytest.approx(by_hand[-1])
    low, high = np.percentile(by_hand, [2.5, 97.5])
    assert (found.figure, found.resamples, found.seed, found.lines) == ("wer", resamples, seed, 4)
    assert found.delta == pytest.approx(sum(EDITS_B) / sum(WORDS) - sum(EDITS_A) / sum(WORDS))
    assert (found.low, found.high) == (pytest.approx(low), pytest.approx(high))
    assert found.delta == pytest.approx(score(b)["wer"] - score(a)["wer"])


def test_an_interval_reads_as_change_figure_and_bounds_and_says_when_it_includes_zero():
    clear = Interval("wer", -0.083, -0.110, -0.057, 1000, 0, 500)
    assert clear.text == str(clear) == "-0.083 WER [-0.110, -0.057]" and not clear.includes_zero
    unsure = Interval("bleu/en-de", 0.012, -0.004, 0.027, 1000, 0, 250)
    assert unsure.includes_zero
    assert unsure.text == "+0.012 BLEU en-de [-0.004, 0.027] (includes 0: not separable)"
    assert Interval("wer_normalized", 0.0, 0.0, 0.0, 10, 0, 3).includes_zero  # identical systems


def test_every_figure_overall_and_per_pair_with_scorings_values():
    """WER on same-language lines, BLEU on translations, each pair resampled within itself; the change on
    all lines is `scoring.score`'s figure of B minus A's, normalised WER included."""
    a, b = [], []
    for pair in (("en", "en"), ("de", "de"), ("en", "de"), ("en", "fr")):
        some_a, some_b = _systems(LINES, pair)
        a += some_a
        b += some_b
    b[1] = Transcript("en", "en", "e f", "E, f!")  # normalised WER forgives case and punctuation
    found = compare(a, b, resamples=50, seed=0)
    wers = [f"{kind}{group}" for group in ("", "/de-de", "/en-en") for kind in ("wer", "wer_normalized")]
    assert list(found) == [*wers, "bleu", "bleu/en-de", "bleu/en-fr"]
    expected = score(b)
    for name, interval in found.items():
        assert interval.delta == pytest.approx(expected[name] - score(a)[name]), name
        assert interval.low <= interval.high and (interval.resamples, interval.seed) == (50, 0)
    assert found["wer"].lines == 8 and found["wer/en-en"].lines == 4 and found["bleu"].lines == 8
    assert found["wer_normalized/en-en"].delta < found["wer/en-en"].delta


def test_the_bleu_interval_is_sacrebleus_corpus_bleu_on_the_same_resampled_lines():
    lines = [
        ("the lamp is on", "the lamp is on", "a lamp is on"),
        ("switch off the light in the hall", "switch off light in the hall", "switch off the light in the hall"),
        ("it is twenty past ten", "it is twenty to ten", "it is twenty past ten"),
        ("open the red door now", "open a red door", "open the red door now"),
        ("the dog runs to the house", "the dog runs to the house", "the dog walks to a house"),
        ("close all the windows please", "close the windows", "close all the windows please"),
    ]
    a, b = _systems(lines, ("en", "de"))
    resamples, seed = 30, 5
    found = compare(a, b, resamples=resamples, seed=seed)["bleu"]

    def bleu(rows, side):
        return sacrebleu.corpus_bleu([lines[i][side] for i in rows], [[lines[i][0] for i in rows]]).score / 100

    draws = np.random.default_rng(seed).integers(0, len(lines), size=(resamples, len(lines)))
    differences = [bleu(row, 2) - bleu(row, 1) for row in draws.tolist()]
    low, high = np.percentile(differences, [2.5, 97.5])
    assert (found.low, found.high) == (pytest.approx(low), pytest.approx(high))
    everything = range(len(lines))
    assert found.delta == pytest.approx(bleu(everything, 2) - bleu(everything, 1))


def test_files_that_are_not_the_same_lines_are_refused_naming_both(tmp_path):
    a, b = _systems(LINES)
    first = write_predictions(tmp_path / "baseline.jsonl", a, with_behaviours=False)
    short = write_predictions(tmp_path / "short.jsonl", b[:3], with_behaviours=False)
    with pytest.raises(DataError, match="baseline.jsonl .4 lines. and .*short.jsonl .3 lines."):
        compare_files(first, short)
    other = write_predictions(tmp_path / "other.jsonl", [b[0], b[2], b[1], b[3]], with_behaviours=False)
    with pytest.raises(DataError, match="baseline.jsonl and .*other.jsonl differ at line 2"):
        compare_files(first, other)
    assert compare_files(first, write_predictions(tmp_path / "b.jsonl", b, with_behaviours=False))["wer"].lines == 4


def test_predictions_read_back_as_written(tmp_path):
    rows = [
        Transcript("zh-CN", "zh-CN", "ni hao", "ni hao", {"terse": True}),
        Transcript("en", "de", "hello", "hallo", {"terse": False}),
    ]
    path = write_predictions(tmp_path / "p.jsonl", rows, with_behaviours=True)
    assert read_predictions(path) == rows
    path.write_text('{"pair": "en-en", "reference": "x"}\n')
    with pytest.raises(DataError, match=r"p.jsonl:1: not a predictions line"):
        read_predictions(path)


# -- a sweep's comparisons: which runs, logged on the parent run, shown in the report ---------------

SPACE: dict[str, BaseDistribution] = {"lr": FloatDistribution(1e-4, 1e-2, log=True)}


def _study(values: dict[float, float]) -> optuna.Study:
    """Complete trials, `lr -> val wer`, in order (minimised)."""
    study = optuna.create_study(direction="minimize")
    for lr, value in values.items():
        study.add_trial(create_trial(params={"lr": lr}, distributions=SPACE, value=value))
    return study


def test_the_runner_up_is_the_best_other_setting():
    study = _study({1e-3: 0.30, 2e-3: 0.20, 3e-3: 0.25, 4e-3: 0.40})
    assert runner_up(study).number == 2
    study.add_trial(create_trial(params={"lr": 2e-3}, distributions=SPACE, value=0.22))  # the best's setting again
    assert runner_up(study).number == 2
    assert runner_up(_study({1e-3: 0.3})) is None


def test_a_sweeps_intervals_are_logged_on_its_parent_run_and_shown_in_the_report(project):
    spec = load_spec(write_spec(project, "sure", spec_dict({"train": "t", "validation": "v", "test": "x"}, full=True)))
    study = _study({1e-3: 0.30, 2e-3: 0.20, 3e-3: 0.25})
    a, b = _systems(LINES)
    for folder, rows in ((BASELINE_DIR, a), (1, b), (2, a), (TEST_DIR, b), (TEST_BASELINE_DIR, a)):
        TrialDir.of(spec, folder).path.mkdir(parents=True)
        write_predictions(TrialDir.of(spec, folder).predictions, rows, with_behaviours=False)
    study.set_user_attr(TEST_ATTR, {"trial": 1, "metrics": {}})
    study.set_user_attr(TEST_BASELINE_ATTR, {"metrics": {}})

    found = {(c.split, c.other): c for c in sweep_comparisons(spec, study)}
    assert list(found) == [("val", "baseline"), ("val", "runner_up"), ("test", "baseline"), ("test", "runner_up")]
    expected = compare(a, b, seed=spec.training.seed)
    assert found["val", "baseline"].intervals == found["test", "baseline"].intervals == expected
    assert found["val", "runner_up"].label == "trial-0002 (runner-up)"
    assert found["test", "runner_up"].missing == "not scored on the test set"

    logged: dict = {}
    tracker: Any = SimpleNamespace(  # what log_intervals asks of a Tracker
        log_metrics=lambda run, metrics: logged.update(metrics),
        log_params=lambda run, params: logged.update(params),
        client=SimpleNamespace(get_run=lambda run: SimpleNamespace(data=SimpleNamespace(params={}))),
    )
    lines: list[str] = []
    no_launcher: Any = None
    Evaluations(spec, study, tracker, "parent", no_launcher, "me", lines.append).log_intervals()
    wer = expected["wer"]
    assert logged["ci_val_wer_vs_baseline_delta"] == logged["ci_test_wer_vs_baseline_delta"] == wer.delta
    assert (logged["ci_val_wer/en-en_vs_runner_up_low"], logged["ci_val_wer_vs_baseline_high"]) == (wer.low, wer.high)
    assert not any("_test_" in name and "runner_up" in name for name in logged)
    assert (logged["bootstrap_resamples"], logged["bootstrap_seed"]) == ("1000", str(spec.training.seed))
    assert f"Best trial against the zero-shot baseline, validation set (95% interval): {wer}" in lines

    summary: Any = SimpleNamespace(study=study)  # the part of a SweepSummary the section reads
    blocks = interval_blocks(spec, summary)
    table = next(block for block in blocks if isinstance(block, Table))
    assert ["validation", "the zero-shot baseline", "wer", wer.text] in table.rows
    assert ["test", "trial-0002 (runner-up)"] not in [row[:2] for row in table.rows]
    assert isinstance(blocks[-1], Text)
    assert "test set against trial-0002 (runner-up): not scored on the test set." in blocks[-1].text
