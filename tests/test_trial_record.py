"""A trial's record: one reader, one writer, the same user attrs the harness always stored."""

from __future__ import annotations

import optuna
import pytest

from harness.trial_record import KEYS, TrialRecord

FULL = TrialRecord(
    seed=300_009,
    host="node-1",
    pid=4242,
    worker="node-1:4242",
    heartbeat=1_700_000_000.5,
    mlflow_run_id="0123abcd",
    trial_pid=4343,
    final={"val_wer": 0.25, "val_bleu": 0.5},
    steps=40,
    pruned_at=20,
    fail_reason="oom",
    requeued=True,
    retry_of=2,
    attempt=1,
    confirms=0,
)


@pytest.fixture
def study(tmp_path) -> optuna.Study:
    return optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="records")


def _reopened(study: optuna.Study) -> optuna.Study:
    return optuna.load_study(study_name=study.study_name, storage=study._storage)


def test_a_record_written_on_a_trial_reads_back_from_the_storage(study):
    trial = study.ask()
    TrialRecord.write(trial, **vars(FULL))
    assert TrialRecord.of(trial) == FULL
    assert TrialRecord.of(_reopened(study).get_trials()[0]) == FULL


def test_the_writer_stores_the_keys_and_values_the_harness_always_stored(study):
    trial = study.ask()
    TrialRecord.write(trial, seed=7, host="h", pid=1, worker="h:1", heartbeat=2.5)
    TrialRecord.write(trial, mlflow_run_id="run", trial_pid=3)
    TrialRecord.write(trial, final={"val_wer": 0.5}, steps=4)
    TrialRecord.write(trial, fail_reason="killed", requeued=False)
    stored = _reopened(study).get_trials()[0].user_attrs
    assert stored == {
        "seed": 7,
        "host": "h",
        "pid": 1,
        "worker": "h:1",
        "heartbeat": 2.5,
        "mlflow_run_id": "run",
        "trial_pid": 3,
        "final": {"val_wer": 0.5},
        "steps": 4,
        "fail_reason": "killed",
        "requeued": False,
    }
    assert set(KEYS) >= set(stored) | {"pruned_at", "retry_of", "attempt"}


def test_keys_never_written_read_as_the_defaults(study):
    trial = study.ask()
    assert TrialRecord.of(trial) == TrialRecord()
    record = TrialRecord.of(trial)
    assert record.final == {} and record.attempt == 0 and not record.requeued and record.seed is None


def test_a_misspelt_key_is_an_error_and_stores_nothing(study):
    trial = study.ask()
    with pytest.raises(TypeError, match="fail_reasn"):
        TrialRecord.write(trial, fail_reasn="oom")
    assert trial.user_attrs == {}


def test_a_retry_is_enqueued_with_its_record(study):
    retry = TrialRecord.attrs(retry_of=0, attempt=1)
    assert retry == {"retry_of": 0, "attempt": 1}
    study.enqueue_trial({}, user_attrs=retry)
    record = TrialRecord.of(study.ask())
    assert (record.retry_of, record.attempt, record.requeued) == (0, 1, False)
