"""Samplers on real Optuna studies: GP on the harness's search space, and out of memory seen by GP."""

import math

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from harness.samplers import MEMORY_CONSTRAINT, TrialSeededSampler, make_sampler, memory_view
from harness.spec import load_spec
from tests.conftest import spec_dict, write_spec
from tests.helpers import proposals_that_run_out_of_memory

NO_DATA = {"train": "train.json", "validation": "validation.json"}
SPACE = {  # the kinds the harness's spaces hold: a log range, numeric, text and boolean choices
    "lr": FloatDistribution(1e-4, 1e-2, log=True),
    "batch_duration": CategoricalDistribution([10, 20, 40]),
    "freeze": CategoricalDistribution(["none", "encoder", "encoder_bn_se"]),
    "use_loss_mask_for_prompt": CategoricalDistribution([True, False]),
}
GP_FITTED = "gp:relative_params:0"  # the system attr GPSampler writes when its model proposed the params


def _gp_spec(project, trials: int = 20):
    spec = spec_dict(NO_DATA, budget={"trials": trials}, sampler={"type": "gp", "seed": 0})
    return load_spec(write_spec(project, "gp", spec))


def _wer(params: dict) -> float:
    """A cheap stand-in for a trial: best near lr 1e-3, batch 20, no freezing, the loss mask on."""
    return (
        (math.log10(params["lr"]) + 3) ** 2
        + {10: 0.3, 20: 0.1, 40: 0.2}[params["batch_duration"]]
        + 0.2 * (params["freeze"] != "none")
        + 0.05 * (not params["use_loss_mask_for_prompt"])
    )


def test_gp_models_the_harness_search_space(project):
    """After TPE's start-up rule (4 random trials), every proposal comes from GPSampler's model, within the space."""
    spec = _gp_spec(project)
    study = optuna.create_study(sampler=TrialSeededSampler(lambda seed: make_sampler(spec, seed), 0))
    for _ in range(12):
        trial = study.ask(SPACE)
        study.tell(trial, _wer(trial.params))
    assert [t.number for t in study.trials if GP_FITTED in t.system_attrs] == list(range(4, 12))
    for trial in study.trials:
        assert all(SPACE[k]._contains(SPACE[k].to_internal_repr(v)) for k, v in trial.params.items()), trial.params
    assert isinstance(study.trials[-1].params["use_loss_mask_for_prompt"], bool)


def test_gp_steers_away_from_params_that_ran_out_of_memory(project):
    """GPSampler reads `Trial.set_constraint` without a constraints_func, but from COMPLETE trials only: an OOM
    told PRUNED is invisible to plain GPSampler, which keeps proposing the large batches it knows nothing about.
    The harness's GP sees each OOM as infeasible and proposes them far less often (measured: 2 against 9)."""
    spec = _gp_spec(project)
    seeds = (0, 1)
    steered = sum(proposals_that_run_out_of_memory(lambda s: make_sampler(spec, s), seed, trials=12) for seed in seeds)
    plain = lambda s: optuna.samplers.GPSampler(seed=s, n_startup_trials=4)  # noqa: E731
    blind = sum(proposals_that_run_out_of_memory(plain, seed, trials=12) for seed in seeds)
    assert steered * 2 <= blind, (steered, blind)


def test_gp_sees_out_of_memory_as_an_infeasible_complete_trial():
    """The worst complete value (so the objective's model stays pessimistic there), the constraint violated;
    every complete trial feasible (GPSampler refuses differing constraint counts); other trials untouched."""
    space = {"batch_duration": CategoricalDistribution([10, 20, 40])}
    minimize = [optuna.study.StudyDirection.MINIMIZE]

    def trial(number: int, state: TrialState, value: float | None = None, oom: bool = False):
        made = create_trial(
            state=state,
            params={"batch_duration": 10},
            distributions=space,
            value=value,
            constraints={MEMORY_CONSTRAINT: 1.0} if oom else None,
        )
        made.number = number
        return made

    trials = [
        trial(0, TrialState.COMPLETE, 0.3),
        trial(1, TrialState.COMPLETE, 0.5),
        trial(2, TrialState.PRUNED, oom=True),
        trial(3, TrialState.PRUNED),
        trial(4, TrialState.FAIL),
    ]
    shown = memory_view(trials, minimize)
    assert [t.state for t in shown] == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED, TrialState.FAIL]
    assert [t.values for t in shown[:3]] == [[0.3], [0.5], [0.5]]
    assert [t.constraints for t in shown[:3]] == [{MEMORY_CONSTRAINT: 0.0}] * 2 + [{MEMORY_CONSTRAINT: 1.0}]
    assert shown[3:] == trials[3:] and trials[2].state == TrialState.PRUNED  # the study's own trials unchanged
    assert memory_view(trials[:2] + trials[3:], minimize) == trials[:2] + trials[3:]  # no OOM: as they are
    assert memory_view(trials[2:], minimize) == trials[2:]  # nothing complete yet: no value to stand in
    # A retention limit judges complete trials (constraint `retention_wer_increase`), but not one that completed
    # before the baseline's retention figure existed: every complete trial is shown with every constraint.
    judged = create_trial(
        state=TrialState.COMPLETE,
        params={"batch_duration": 20},
        distributions=space,
        value=0.2,
        constraints={"retention_wer_increase": 0.4},
    )
    shown = memory_view([trials[0], judged, trials[2]], minimize)
    assert [t.constraints for t in shown] == [
        {"retention_wer_increase": 0.0, MEMORY_CONSTRAINT: 0.0},
        {"retention_wer_increase": 0.4, MEMORY_CONSTRAINT: 0.0},
        {"retention_wer_increase": 0.0, MEMORY_CONSTRAINT: 1.0},
    ]
