"""Pruning decisions and the supervisor's footprint, on real Optuna studies (in memory)."""

import subprocess
import sys

import optuna
import pytest

from harness.spec import PrunerSpec, load_spec
from harness.study import LatestMedianPruner, TrialSeededSampler, make_pruner
from tests.conftest import spec_dict, write_spec


def _study_with_two_finished_curves(pruner) -> optuna.Study:
    """Two complete trials whose WER falls 0.8 -> 0.6 -> 0.4 and 0.7 -> 0.5 -> 0.3."""
    study = optuna.create_study(direction="minimize", pruner=pruner)
    for curve in ((0.8, 0.6, 0.4), (0.7, 0.5, 0.3)):
        trial = study.ask()
        for step, value in zip((10, 20, 30), curve, strict=True):
            trial.report(value, step)
        study.tell(trial, curve[-1])
    return study


def _prune_decisions(study: optuna.Study, curve: tuple[float, ...]) -> list[bool]:
    trial = study.ask()
    decisions = []
    for step, value in zip((10, 20, 30), curve, strict=False):
        trial.report(value, step)
        decisions.append(bool(trial.should_prune()))
    return decisions


@pytest.mark.parametrize("compare", ["latest", "best"])
def test_a_climbing_wer_is_pruned_only_when_comparing_the_latest_value(compare):
    pruner = LatestMedianPruner(n_startup_trials=2) if compare == "latest" else optuna.pruners.MedianPruner(2)
    study = _study_with_two_finished_curves(pruner)
    # Good at the first validation (0.5 < median 0.75), then the decoder starts to hallucinate.
    decisions = _prune_decisions(study, (0.5, 1.4, 2.0))
    assert decisions[0] is False
    assert decisions[1] is (compare == "latest")


def test_latest_median_pruner_keeps_a_trial_that_stays_below_the_median():
    study = _study_with_two_finished_curves(LatestMedianPruner(n_startup_trials=2))
    assert _prune_decisions(study, (0.6, 0.5, 0.3)) == [False, False, False]
    assert _prune_decisions(study, (0.9,)) == [True]


def test_the_spec_chooses_the_pruner(project, speech_data):
    def pruner(**overrides):
        return make_pruner(load_spec(write_spec(project, "p", spec_dict(speech_data, pruner=overrides))))

    assert PrunerSpec().compare == "latest"
    assert type(pruner()) is LatestMedianPruner
    assert type(pruner(compare="best")) is optuna.pruners.MedianPruner
    assert type(pruner(type="none")) is optuna.pruners.NopPruner


def test_the_supervisor_does_not_import_torch_or_lightning():
    """Trials train in their own processes; the supervisor stays small (about 190 MiB, not 670)."""
    code = "import sys, harness.cli, harness.sweep; print(sorted({'torch', 'lightning', 'nemo'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_proposals_follow_the_trial_number_not_the_process():
    """Same study seed: the same params for each trial number (any machine, any resume); trials
    asked concurrently (distinct numbers) draw differently."""
    space = {"lr": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True)}

    def proposals(asks: int) -> list[float]:
        sampler = TrialSeededSampler(lambda seed: optuna.samplers.TPESampler(seed=seed, n_startup_trials=4), 0)
        study = optuna.create_study(sampler=sampler)
        return [study.ask(space).params["lr"] for _ in range(asks)]  # none told: all run at once

    first, again = proposals(4), proposals(4)
    assert first == again
    assert len(set(first)) == 4


def test_a_trial_is_never_pruned_at_its_last_validation():
    """Its steps are spent by then: pruning it would only throw its value away."""
    from types import SimpleNamespace

    from harness.callbacks import PruningReporter

    study = _study_with_two_finished_curves(LatestMedianPruner(n_startup_trials=2))
    reporter = PruningReporter(study.ask(), objective=lambda metrics: metrics["val_wer"])
    trainer = SimpleNamespace(sanity_checking=False, global_step=10, max_steps=30, should_stop=False)
    for step, wer in ((10, 0.5), (20, 0.4), (30, 0.9)):  # worse than the median (0.35) only at the end
        trainer.global_step, trainer.callback_metrics = step, {"val_wer": wer}
        reporter.on_validation_end(trainer, None)
    assert reporter.pruned_at is None and not trainer.should_stop
    assert reporter.trial.should_prune()  # the pruner alone would have pruned it
