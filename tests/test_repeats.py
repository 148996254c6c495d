"""Repeat proposals on a real Optuna study: which earlier trials answer a repeat, and what the repeat is told."""

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from harness.study import MEMORY_CONSTRAINT, best_trial
from harness.sweep import answer_repeat
from harness.trial_record import OOM, TrialRecord

SPACE = {"lr": FloatDistribution(1e-4, 1e-2, log=True), "batch_duration": CategoricalDistribution([10, 20])}
LR = 0.0012345678901234567  # floats compare exactly: both sides come from the storage


def _study(*trials: optuna.trial.FrozenTrial) -> optuna.Study:
    study = optuna.create_study(storage="sqlite:///:memory:", direction="minimize")
    for trial in trials:
        study.add_trial(trial)
    return study


def _asked(study: optuna.Study, params: dict) -> optuna.Trial:
    study.enqueue_trial(params)
    return study.ask(SPACE)


def test_a_repeat_of_a_complete_trial_is_told_its_value():
    done = create_trial(
        params={"lr": LR, "batch_duration": 20},
        distributions=SPACE,
        value=0.25,
        user_attrs=TrialRecord.attrs(final={"val_wer": 0.25}, steps=200, seed=7),
    )
    study = _study(done)
    assert answer_repeat(study, _asked(study, {"lr": LR * (1 + 1e-12), "batch_duration": 20}), "w") is None
    study.tell(study.trials[-1].number, state=TrialState.FAIL)

    outcome = answer_repeat(study, _asked(study, {"lr": LR, "batch_duration": 20}), "host:1")
    assert outcome is not None and (outcome.state, outcome.value, outcome.repeat_of) == (TrialState.COMPLETE, 0.25, 0)
    repeat = study.trials[-1]
    assert repeat.state == TrialState.COMPLETE and repeat.value == 0.25
    record = TrialRecord.of(repeat)
    assert (record.repeat_of, record.final, record.worker) == (0, {"val_wer": 0.25}, "host:1")
    assert record.steps is None and record.seed is None and record.mlflow_run_id is None  # nothing trained
    assert best_trial(study).number == 0  # a tie goes to the trial that trained (its checkpoint, run and seed)


def test_a_repeat_of_a_pruned_trial_reports_its_curve_and_is_pruned():
    pruned = create_trial(
        state=TrialState.PRUNED,
        params={"lr": LR, "batch_duration": 10},
        distributions=SPACE,
        intermediate_values={50: 0.9, 100: 0.8},
        user_attrs=TrialRecord.attrs(pruned_at=100),
    )
    study = _study(pruned)
    outcome = answer_repeat(study, _asked(study, {"lr": LR, "batch_duration": 10}), "w")
    assert outcome is not None and (outcome.state, outcome.reason) == (TrialState.PRUNED, "pruned at step 100")
    repeat = study.trials[-1]
    assert repeat.state == TrialState.PRUNED and repeat.intermediate_values == {50: 0.9, 100: 0.8}
    assert repeat.value == 0.8  # Optuna's pruned value: the last reported, as the trial it repeats
    assert TrialRecord.of(repeat).repeat_of == 0


def test_failures_and_out_of_memory_do_not_answer_a_repeat():
    """A FAIL says nothing about its params; out of memory may not recur on another worker's GPU."""
    params = {"lr": LR, "batch_duration": 20}
    failed = create_trial(state=TrialState.FAIL, params=params, distributions=SPACE)
    oom = create_trial(
        state=TrialState.PRUNED,
        params=params,
        distributions=SPACE,
        user_attrs=TrialRecord.attrs(fail_reason=OOM),
        constraints={MEMORY_CONSTRAINT: 1.0},
    )
    study = _study(failed, oom)
    assert answer_repeat(study, _asked(study, params), "w") is None
    assert study.trials[-1].state == TrialState.RUNNING  # left to train
