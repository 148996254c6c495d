"""Reproduce: a recorded trial re-run from its params and seed gives the same metrics on CPU."""

import io

import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console

from harness.spec import load_spec
from harness.study import training_seed
from harness.sweep import Supervisor, reproduce_trial
from tests.conftest import spec_dict, write_spec

# Stated tolerance for canary-tiny on CPU (absolute, on 0..1 WER/BLEU): same seed, same data order,
# deterministic CPU kernels. Measured difference so far: 0.0.
TOLERANCE = 0.01


@pytest.mark.extended  # trains several trials: `make test-extended`
def test_reproduction_matches_the_recorded_trial(project, speech_data):
    spec = load_spec(
        write_spec(
            project, "repro", spec_dict(speech_data, budget={"trials": 1, "max_steps": 20}, pruner={"type": "none"})
        )
    )
    Supervisor(spec, console=Console(file=io.StringIO())).run()
    out = io.StringIO()
    original, again = reproduce_trial(spec, None, Console(file=out, width=200))

    for key in ("val_wer", "val_bleu"):
        assert abs(again[key] - original[key]) <= TOLERANCE, (key, original[key], again[key])
    assert "recorded vs reproduced" in out.getvalue() and "difference" in out.getvalue()
    client = MlflowClient(spec.tracking_uri)
    experiment = client.get_experiment_by_name("repro")
    runs = client.search_runs([experiment.experiment_id], "tags.`harness.reproduction_of` = 'trial-0000'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["seed"] == str(training_seed(spec.training.seed, 0))
