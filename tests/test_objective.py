"""The sweep objective: which validation figure each `objective.metric` reads, and its direction."""

import math

import pytest

from harness.objective import objective_values
from harness.spec import ObjectiveSpec, build

FIGURES = {"val_wer": 0.30, "val_wer_normalized": 0.12, "val_bleu": 0.40}


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        ("wer", [0.30]),
        ("wer_normalized", [0.12]),
        ("bleu", [0.40]),
        ("mix", [0.30 - 0.5 * 0.40]),
        ("pareto", [0.30, 0.40]),
    ],
)
def test_each_objective_reads_its_figure(metric, expected):
    objective = ObjectiveSpec(metric=metric, bleu_weight=0.5)
    assert objective_values(FIGURES, objective) == pytest.approx(expected)


def test_normalised_wer_is_minimised_and_named_for_the_report():
    objective = build(ObjectiveSpec, {"metric": "wer_normalized"}, where="sweep.yaml", prefix="objective.")
    assert objective.metric == "wer_normalized"
    assert "normalised WER" in objective.meaning


def test_an_objective_without_samples_is_an_error_not_a_zero():
    with pytest.raises(ValueError, match="wer_normalized"):
        objective_values({"val_bleu": 0.4, "val_wer_normalized": math.nan}, ObjectiveSpec(metric="wer_normalized"))
