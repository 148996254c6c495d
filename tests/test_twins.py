"""Every small twin, one per Canary checkpoint family, runs a real trial through the harness; its
recipe (`tools.twins`) builds exactly the packaged twins and stays out of the shipped package."""

import io

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console

from harness.canary import inspect_checkpoint
from harness.model_source import PACKAGED, packaged_model
from harness.spec import load_spec
from harness.study import open_storage
from harness.sweep import Supervisor
from harness.trial_dir import TrialDir
from harness.trial_record import TrialRecord
from tests.conftest import spec_dict, write_spec
from tools import twins as recipe

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


@pytest.mark.extended  # a trial per twin: `make test-extended`
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
    assert trial.state == TrialState.COMPLETE, TrialDir.of(spec, 0).log.read_text()[-2000:]
    record = TrialRecord.of(trial)
    assert record.final["val_wer"] >= 0 and record.steps == 4


def test_the_recipe_builds_exactly_the_packaged_twins_into_harness_assets():
    assert sorted(recipe.TWINS) == sorted(TWINS) == sorted(PACKAGED)
    assert all(recipe.twin_spec(name).twin_of.startswith("nvidia/") for name in PACKAGED)
    assert (recipe.REPO_ROOT / "pyproject.toml").is_file()  # two folders above tools/twins/
    assert packaged_model("canary-tiny").resolve().parent == recipe.ASSETS_DIR
    args = recipe.parse_args(["--name", "canary-tiny-v1"])
    assert (args.name, args.work_dir, args.out) == ("canary-tiny-v1", recipe.REPO_ROOT / "build", None)


def test_the_recipe_is_not_shipped():
    """pyproject's package find takes `harness*` only: a wheel holds no `tools` (nor tests, benchmarks)."""
    from setuptools import find_packages

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    find = tomllib.loads((recipe.REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    shipped = find_packages(str(recipe.REPO_ROOT), include=find["include"])
    assert "harness" in shipped and "harness.assets" in shipped
    assert {name.split(".")[0] for name in shipped} == {"harness"}
    assert not (recipe.REPO_ROOT / "harness" / "twins.py").exists()
