"""`start_from:`: entries checked against the search space on load, enqueued once per study on real storage."""

import subprocess
import sys

import pytest

from harness.cli import main
from harness.errors import SpecError
from harness.pruners import make_pruner
from harness.spec import load_spec
from harness.start_from import load_space, start_from_params
from harness.study import open_study
from harness.trial_record import TrialRecord
from tests.conftest import spec_dict, write_spec
from tests.helpers import load_study

NO_DATA = {"train": "train.json", "validation": "validation.json"}  # nothing here reaches the data


def _spec(project, entries, **overrides):
    return load_spec(write_spec(project, "start", spec_dict(NO_DATA, start_from=entries, **overrides)))


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (
            [{"dropout": 0.1}],
            "sweeps/start.yaml: `start_from[0].dropout` is not a parameter of the search space "
            "search_spaces/test.yaml (its parameters: batch_duration, freeze, lr, use_loss_mask_for_prompt); "
            "remove it, or add `dropout` to the search space.",
        ),
        (
            [{"lr": 1e-3}, {"lr": 0.1}],
            "sweeps/start.yaml: `start_from[1].lr` is 0.1, outside `lr`'s range 0.0005..0.003 in "
            "search_spaces/test.yaml; use a value inside it, or widen the range.",
        ),
        ([{"lr": "fast"}], "sweeps/start.yaml: `start_from[0].lr` is 'fast'; it must be a number"),
        (
            [{"batch_duration": 15}],
            "sweeps/start.yaml: `start_from[0].batch_duration` is 15; use one of 10, 20 (its choices in "
            "search_spaces/test.yaml).",
        ),
        ([{"batch_duration": "20"}], "`start_from[0].batch_duration` is '20'; use one of 10, 20"),  # text, not 20
        ([{"use_loss_mask_for_prompt": 1}], "`start_from[0].use_loss_mask_for_prompt` is 1; use one of True, False"),
        ([{"freeze": "none"}, {}], "sweeps/start.yaml: `start_from[1]` is empty; give it params"),
        (
            [{"freeze": "none"}] * 4,
            "sweeps/start.yaml: `start_from` has 4 entries, but `budget.trials` is 3: the last would never run.",
        ),
    ],
)
def test_start_from_entries_are_checked_against_the_search_space(project, entries, message):
    spec = _spec(project, entries)
    with pytest.raises(SpecError) as caught:
        load_space(spec)
    assert message in str(caught.value)


def test_a_bad_entry_stops_the_sweep_before_any_store_is_made(project, capsys):
    _spec(project, [{"lr": 0.1}])
    assert main(["sweep", "start"]) == 2
    assert "`start_from[0].lr` is 0.1, outside `lr`'s range" in capsys.readouterr().out
    assert not (project / "mlruns" / "optuna.db").exists()


def test_entries_are_stored_as_the_space_holds_params(project):
    with pytest.raises(SpecError, match=r"`start_from\[0\]` must be a mapping"):
        _spec(project, [5])
    spec = _spec(project, [{"lr": "1e-3", "batch_duration": 20.0, "use_loss_mask_for_prompt": False}])
    (entry,) = start_from_params(spec, load_space(spec))
    assert entry == {"lr": 1e-3, "batch_duration": 20, "use_loss_mask_for_prompt": False}
    assert type(entry["lr"]) is float and type(entry["batch_duration"]) is int  # the choice itself, not 20.0


OPEN = (
    "from harness.spec import load_spec; from harness.start_from import load_space; from harness.pruners import "
    "make_pruner; from harness.study import open_study; spec = load_spec('start'); "
    "open_study(spec, load_space(spec), pruner=make_pruner(spec))"
)


def test_start_from_is_enqueued_once_per_study_whatever_the_workers_and_resumes(project):
    """Two workers opening a new study at once (one `create_study` succeeds) and a resume: each entry once."""
    entries = [{"lr": 1e-3, "batch_duration": 20}, {"freeze": "encoder_bn_se"}]
    spec = _spec(project, entries)
    (project / "mlruns").mkdir()
    workers = [subprocess.Popen([sys.executable, "-c", OPEN], cwd=project) for _ in range(2)]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    open_study(spec, load_space(spec), pruner=make_pruner(spec))  # a resume

    study = load_study(spec)
    marked = [TrialRecord.of(t).start_from for t in study.get_trials() if TrialRecord.of(t).start_from is not None]
    assert marked == [0, 1]
    study = open_study(spec, load_space(spec), pruner=make_pruner(spec))
    asked = [study.ask(load_space(spec)) for _ in range(3)]
    assert [TrialRecord.of(t).start_from for t in asked] == [0, 1, None]
    assert {k: asked[0].params[k] for k in entries[0]} == entries[0] and asked[1].params["freeze"] == "encoder_bn_se"
    assert (
        set(asked[0].params) == set(asked[2].params) == {"lr", "batch_duration", "freeze", "use_loss_mask_for_prompt"}
    )
