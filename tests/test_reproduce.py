"""Reproduce: a recorded trial re-run from its params, seed and thread count gives the same figures on CPU, and
what cannot be re-created (another device, other versions, a GPU without deterministic algorithms) is said."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any, cast

import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console

from harness.numerics import Numerics
from harness.spec import TrainingSpec, load_spec
from harness.study import training_seed
from harness.sweep import Supervisor, reproduce_trial
from harness.sweep._evaluations import Evaluations
from harness.sweep._process import Launcher
from harness.sweep._reproduce import _caption
from harness.trial import Result
from harness.trial_dir import TrialDir
from harness.trial_record import TrialRecord
from tests.conftest import spec_dict, write_spec
from tests.helpers import CPU_TRIAL, load_study


@pytest.mark.extended  # trains several trials: `make test-extended`
def test_reproduction_matches_the_recorded_trial(project, speech_data, monkeypatch):
    """The trial trains in a one-thread slot; `harness reproduce` runs from a supervisor whose slot has two
    threads (as `make demo`'s trials and a later `harness reproduce` do), and the figures are equal, not close:
    the reproduction re-creates the recorded thread count."""
    spec = load_spec(
        write_spec(
            project, "repro", spec_dict(speech_data, budget={"trials": 1, "max_steps": 20}, pruner={"type": "none"})
        )
    )
    Supervisor(spec, console=Console(file=io.StringIO()), slots=[{"OMP_NUM_THREADS": "1"}]).run()
    recorded = Numerics.of(TrialRecord.of(load_study(spec).trials[0]).numerics)
    assert recorded is not None and (recorded.threads, recorded.omp_num_threads) == (1, "1")
    assert (recorded.device, recorded.seed) == ("cpu", training_seed(spec.training.seed, 0))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the reproducing supervisor's slot (`default_slots` reads it)
    out = io.StringIO()
    original, again = reproduce_trial(spec, None, Console(file=out, width=200))

    for key in ("val_wer", "val_bleu"):
        assert again[key] == original[key], (key, original[key], again[key])
    result = Result.read(TrialDir.of(spec, "trial-0000-reproduction"))
    ran = Numerics.of(result.numerics) if result is not None else None
    assert ran is not None and (ran.threads, ran.omp_num_threads) == (1, "1")
    text = out.getvalue()
    assert "recorded vs reproduced" in text and "difference" in text
    assert "Re-creating trial-0000's numerics: 1 thread(s), cpu" in text and "Exact reproduction:" in text
    client = MlflowClient(spec.tracking_uri)
    experiment = client.get_experiment_by_name("repro")
    runs = client.search_runs([experiment.experiment_id], "tags.`harness.reproduction_of` = 'trial-0000'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["seed"] == str(training_seed(spec.training.seed, 0))


def _evaluations(slot: dict[str, str], logged: list[str]) -> Evaluations:
    """The reproduce path's announcements, without stores or a model: only the slot and the log are read."""
    nothing = cast(Any, None)
    launcher = Launcher(nothing, nothing, nothing, nothing, nothing, [slot])
    spec = cast(Any, SimpleNamespace(training=TrainingSpec(accelerator="cpu")))
    return Evaluations(spec, nothing, nothing, "parent", launcher, "host:1", logged.append)


def test_a_trial_recorded_without_numerics_reproduces_with_the_slots_threads_in_one_line() -> None:
    logged: list[str] = []
    differs = _evaluations({"OMP_NUM_THREADS": "2"}, logged)._cannot_recreate("trial-0003", None, 7)
    assert len(logged) == 1 and "threads were not recorded" in logged[0] and "OMP_NUM_THREADS=2" in logged[0]
    assert differs and "Exact reproduction impossible (threads, device and versions not recorded)" in _caption(differs)


def test_what_a_reproduction_cannot_recreate_is_said_before_it_trains(monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads are re-created (the probe runs under the recorded OMP_NUM_THREADS, not the slot's two); another
    device is named with what it means for the figures, and the table says the reproduction cannot be exact."""
    asked: list[dict] = []

    def probe(training, seed, env, threads):
        asked.append({"omp": env.get("OMP_NUM_THREADS"), "threads": threads, "seed": seed})
        return here

    monkeypatch.setattr("harness.sweep._evaluations.probe", probe)
    here = Numerics(**{**CPU_TRIAL.as_dict(), "threads": 1, "device": "NVIDIA H200", "precision": "bf16-mixed"})
    logged: list[str] = []
    differs = _evaluations({"OMP_NUM_THREADS": "2"}, logged)._cannot_recreate("trial-0000", CPU_TRIAL, 300_000)
    assert asked == [{"omp": "1", "threads": 1, "seed": 300_000}]
    assert differs == ["device cpu -> NVIDIA H200", "precision 32-true -> bf16-mixed"]
    assert len(logged) == 1 and "cannot be re-created exactly here: device cpu -> NVIDIA H200" in logged[0]
    assert "one more seed" in logged[0]
    assert _caption(differs).startswith("Exact reproduction impossible (device cpu -> NVIDIA H200; precision")

    here, logged[:] = CPU_TRIAL, []
    assert _evaluations({"OMP_NUM_THREADS": "2"}, logged)._cannot_recreate("trial-0000", CPU_TRIAL, 300_000) == []
    assert logged == ["Re-creating trial-0000's numerics: 1 thread(s), cpu, 32-true, the same library versions."]
