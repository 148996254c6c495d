"""Every small twin, one per Canary checkpoint family, runs a real trial through the harness."""

import io

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console

from harness.canary import inspect_checkpoint
from harness.model_source import packaged_model
from harness.spec import load_spec
from harness.study import open_storage
from harness.sweep import Supervisor
from tests.conftest import spec_dict, write_spec

TWINS = {
    # name: (tokenizer kind, prompt format, twin of)
    "canary-tiny": ("aggregate", "canary2", "canary-180m-flash / canary-1b-flash"),
    "canary-tiny-v1": ("aggregate", "canary", "canary-1b"),
    "canary-tiny-v2": ("unified", "canary2", "canary-1b-v2"),
}


@pytest.mark.parametrize("name", sorted(TWINS))
def test_twin_format_is_detected(name):
    info = inspect_checkpoint(packaged_model(name))
    assert (info.tokenizer_kind, info.prompt_format) == TWINS[name][:2]
    assert info.config.train_ds.text_field == "answer"  # the released quirk every twin keeps


@pytest.mark.parametrize("name", ["canary-tiny-v1", "canary-tiny-v2"])
def test_twin_runs_a_trial(project, speech_data, name):
    spec = load_spec(
        write_spec(
            project,
            name,
            spec_dict(
                speech_data,
                model=name,
                budget={"trials": 1, "max_steps": 4, "val_check_interval": 2},
                pruner={"type": "none"},
            ),
        )
    )
    Supervisor(spec, console=Console(file=io.StringIO())).run()
    (trial,) = optuna.load_study(study_name=name, storage=open_storage(spec.storage_url)).get_trials()
    assert trial.state == TrialState.COMPLETE, (spec.trials_dir / "trial-0000" / "trial.log").read_text()[-2000:]
    assert trial.user_attrs["final"]["val_wer"] >= 0 and trial.user_attrs["steps"] == 4
