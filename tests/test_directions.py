"""Which way is better: one rule for every figure name and every objective."""

import json

import optuna
import pytest

from harness.directions import Direction, figure_direction, objective_directions

MIN, MAX = Direction.MINIMIZE, Direction.MAXIMIZE


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("val_wer", MIN),
        ("val_wer_normalized/en-en", MIN),
        ("val_bleu/en-de", MAX),
        ("test_bleu", MAX),
        ("final_val_wer", MIN),
        ("best_val_bleu", MAX),
        ("retention_wer/answer_on", MIN),
        ("retention_bleu/answer_on", MAX),  # a behaviour's name never decides the figure's direction
        ("val_bleu/wer_off", MAX),
        ("val_wer/bleu_on", MIN),
        ("val_loss", MIN),
    ],
)
def test_a_figure_goes_the_way_of_its_figure_whatever_its_prefixes_and_group(name, expected):
    assert figure_direction(name) is expected


def test_the_objective_goes_the_studys_way_and_an_unknown_figure_is_refused():
    assert figure_direction("objective", MAX) is MAX and figure_direction("best_objective", MIN) is MIN
    for unknown in ("objective", "val_cer", "peak_rss_mb"):
        with pytest.raises(ValueError, match="no direction"):
            figure_direction(unknown)


@pytest.mark.parametrize(
    ("metric", "expected"),
    [("wer", [MIN]), ("wer_normalized", [MIN]), ("bleu", [MAX]), ("mix", [MIN]), ("pareto", [MIN, MAX])],
)
def test_each_objective_has_its_directions(metric, expected):
    assert objective_directions(metric) == expected


def test_a_direction_is_optunas_name_and_ranks_values():
    assert MIN == "minimize" and f"{MAX}" == "maximize" and json.dumps([MIN]) == '["minimize"]'
    assert optuna.create_study(directions=[MIN, MAX]).directions == [
        optuna.study.StudyDirection.MINIMIZE,
        optuna.study.StudyDirection.MAXIMIZE,
    ]
    assert Direction.of(optuna.study.StudyDirection.MAXIMIZE) is MAX
    assert MIN.better(0.1, 0.2) and not MIN.better(0.2, 0.2) and MAX.better(0.3, 0.2) and MAX.better(0.0, None)
    assert (MIN.best([0.3, 0.1]), MIN.worst([0.3, 0.1])) == (0.1, 0.3)
    assert (MAX.best([0.3, 0.1]), MAX.worst([0.3, 0.1])) == (0.3, 0.1)
    assert sorted([0.2, 0.5, 0.1], key=lambda v: MAX.sign * v) == [0.5, 0.2, 0.1]
    assert (MIN.word, MAX.word) == ("lower", "higher")
