"""End-to-end sweeps on canary-tiny: real trial processes, real Optuna storage, real MLflow store."""

import io
import json
import re
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from rich.console import Console

from harness.fault_injection import FAULT_ENV
from harness.number_text import params_text
from harness.provenance import manifest_file
from harness.search_space import format_param, load_search_space
from harness.spec import load_spec
from harness.study import MEMORY_CONSTRAINT, open_storage
from harness.sweep import Supervisor
from harness.trial_dir import TrialDir
from harness.trial_manifests import trial_data
from harness.trial_record import OOM, TrialRecord
from tests.conftest import RETENTION_LIMIT_KEPT, SEARCH_SPACE, spec_dict, write_spec
from tests.helpers import load_study

STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAIL: "FAILED"}


def _run(spec):
    Supervisor(spec, console=Console(file=io.StringIO(), width=200)).run()
    return _records(spec)


def _records(spec):
    study = load_study(spec)
    client = MlflowClient(spec.tracking_uri)
    experiment = client.get_experiment_by_name(spec.experiment_name)
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("harness.role") == "sweep"]
    assert len(parents) == 1
    children = {r.data.tags["mlflow.runName"]: r for r in runs if r.data.tags.get("mlflow.parentRunId")}
    return study, client, parents[0], children


def test_sweep_records_every_trial_in_optuna_and_mlflow(report_sweep, monkeypatch, tmp_path):
    """The full sweep (baseline, 3 unpruned trials, test set) that test_report.py and test_export.py read too."""
    spec = report_sweep.enter(monkeypatch)
    study, client, parent, children = _records(spec)
    console = report_sweep.console

    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert parent.info.status == "FINISHED"
    assert set(children) == {"baseline", "trial-0000", "trial-0001", "trial-0002"}
    assert {"baseline_val_wer", "baseline_val_bleu", "baseline_val_wer/en-en", "baseline_val_bleu/en-de"} <= set(
        parent.data.metrics
    )
    best = study.best_trial
    assert parent.data.metrics["best_objective"] == pytest.approx(best.value)
    # Only the best trial keeps its checkpoint; it was scored on the test manifest.
    kept = sorted(d.name for d in spec.trials_dir.glob("trial-*") if TrialDir(d).model.is_file())
    assert kept == [f"trial-{best.number:04d}"]
    best_run = children[f"trial-{best.number:04d}"]
    assert {"test_wer", "test_wer_normalized", "test_bleu", "test_wer/en-en", "test_bleu/en-de"} <= set(
        best_run.data.metrics
    )
    assert parent.data.metrics["best_test_wer"] == best_run.data.metrics["test_wer"]
    # Beside it, the zero-shot baseline on the test set; the runner-up's checkpoint was not kept.
    baseline_run, metrics = children["baseline"], parent.data.metrics
    baseline_test = study.user_attrs["test_baseline"]["metrics"]
    assert metrics["baseline_test_wer"] == baseline_run.data.metrics["test_wer"] == baseline_test["test_wer"]
    assert "test_runner_up" not in study.user_attrs and not any(k.startswith("runner_up_") for k in metrics)
    assert re.search(r"runner-up trial-000\d: no checkpoint kept \(training.keep_checkpoints: best\)", console)
    for folder in ("test", "test-baseline"):  # the test runs' transcripts, one line per test manifest line
        lines = TrialDir.of(spec, folder).predictions.read_text().splitlines()
        assert len(lines) == len(Path(spec.data.test).read_text().splitlines()), folder
    # The intervals on the parent run: over every line their change is the figures' (best minus zero-shot).
    best_final = TrialRecord.of(best).final
    for figure in ("wer", "wer/en-en", "bleu"):
        assert metrics[f"ci_val_{figure}_vs_baseline_delta"] == pytest.approx(
            best_final[f"val_{figure}"] - study.user_attrs["baseline"][f"val_{figure}"]
        )
        change = metrics[f"ci_test_{figure}_vs_baseline_delta"]
        assert change == pytest.approx(metrics[f"best_test_{figure}"] - metrics[f"baseline_test_{figure}"])
        assert metrics[f"ci_test_{figure}_vs_baseline_low"] <= change <= metrics[f"ci_test_{figure}_vs_baseline_high"]
        assert f"ci_val_{figure}_vs_runner_up_delta" in metrics
    assert (parent.data.params["bootstrap_resamples"], parent.data.params["bootstrap_seed"]) == (
        "1000",
        str(spec.training.seed),
    )
    manifests = {role: _dataset(getattr(spec.data, role)) for role in ("train", "validation", "test")}
    manifests["retention"] = _dataset(spec.data.retention[0])
    # It validates and scores the retention set; after the trials, the test set.
    assert _datasets(children["baseline"]) == {
        "validation": manifests["validation"],
        "retention": manifests["retention"],
        "test": manifests["test"],
    }
    assert "system/cpu_utilization_percentage" in children["baseline"].data.metrics
    for trial in trials:
        run = children[f"trial-{trial.number:04d}"]
        assert run.info.status == "FINISHED"
        assert set(trial.params) == set(SEARCH_SPACE)
        assert {k: run.data.params[k] for k in trial.params} == {k: format_param(v) for k, v in trial.params.items()}
        assert run.data.params["trial_number"] == str(trial.number)
        # Every validation logs raw and normalised WER, BLEU, and each per pair (from its one decode).
        for metric in ("val_wer", "val_wer_normalized", "val_bleu", "val_wer/en-en", "val_bleu/en-de"):
            history = client.get_metric_history(run.info.run_id, metric)
            assert [m.step for m in history] == [10, 20], metric
        assert run.data.metrics["final_val_bleu"] == pytest.approx(run.data.metrics["final_val_bleu/en-de"])
        predictions = [a.path for a in client.list_artifacts(run.info.run_id, "predictions")]
        assert predictions == ["predictions/predictions.jsonl"]
        assert run.data.metrics["objective"] == pytest.approx(trial.value)
        assert run.data.metrics["best_val_wer"] <= run.data.metrics["final_val_wer"]
        assert {"final_val_wer/en-en", "final_val_bleu/en-de"} <= set(run.data.metrics)
        # The sampled batch_duration bounded every batch the trial trained on.
        assert run.data.metrics["train_batch_seconds_max"] <= trial.params["batch_duration"]
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "config")]
        assert artifacts == ["config/config.yaml"]
        logged = client.download_artifacts(run.info.run_id, "config/config.yaml", str(tmp_path))
        assert Path(logged).read_text() == TrialDir.of(spec, trial.number).config.read_text()  # not a test run's
        # System metrics through the trial (every 2 s here, then a last sample), and its peak memory.
        for metric in ("system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"):
            assert len(client.get_metric_history(run.info.run_id, metric)) >= 2, metric
        assert run.data.metrics["peak_rss_mb"] > 100  # restored canary-tiny, torch and NeMo
        assert "peak_gpu_memory_mb" not in run.data.metrics  # CPU trials
        # The manifests it read, as datasets named by content (the best trial's run also scored the test set).
        test = {"test": manifests["test"]} if run is best_run else {}
        read = {
            "training": manifests["train"],
            "validation": manifests["validation"],
            "retention": manifests["retention"],
        }
        assert _datasets(run) == {**read, **test}
        config = TrialDir.of(spec, trial.number).config.read_text()
        assert f"use_loss_mask_for_prompt: {str(trial.params['use_loss_mask_for_prompt']).lower()}" in config
        # Not a terminal: a line per validation as it happened, with the trial's ETA.
        name, final = f"trial-{trial.number:04d}", run.data.metrics["final_val_wer"]
        line = rf"^{name} step (\d+)/20 .*\bval_wer=(\S+) .*\bval_bleu=\S+ ETA (\d+)m(\d\d)s$"
        lines = re.findall(line, console, re.M)
        assert [step for step, *_ in lines] == ["10", "20"], console
        assert float(lines[1][1]) == pytest.approx(final, abs=1e-4) and lines[1][2:] == ("0", "00")


RETENTION_FIGURES = {"retention_wer", "retention_wer_normalized", "retention_bleu"}
RETENTION_FIGURES |= {"retention_wer/en-en", "retention_bleu/en-de"}


def test_retention_sets_are_scored_on_every_complete_trial_and_on_the_baseline(report_sweep, monkeypatch):
    """The shared sweep declares a retention set and a limit (+1000) that every trial keeps: each complete
    trial's run and record carry the retention figures at its final step, the baseline's too, and every
    trial carries the constraint Optuna was told (increase minus limit, <= 0)."""
    spec = report_sweep.enter(monkeypatch)
    study, client, parent, children = _records(spec)
    baseline = study.user_attrs["baseline"]
    assert set(baseline) >= RETENTION_FIGURES and set(children["baseline"].data.metrics) >= RETENTION_FIGURES
    assert parent.data.metrics["baseline_retention_wer"] == pytest.approx(baseline["retention_wer"])
    for trial in study.get_trials():
        run, final = children[f"trial-{trial.number:04d}"], TrialRecord.of(trial).final
        assert set(final) >= RETENTION_FIGURES
        for name in RETENTION_FIGURES:
            (logged,) = client.get_metric_history(run.info.run_id, name)
            assert (logged.step, logged.value) == (20, pytest.approx(final[name])), name
        increase = final["retention_wer"] - baseline["retention_wer"]
        assert trial.constraints == {"retention_wer_increase": pytest.approx(increase - RETENTION_LIMIT_KEPT)}
    assert study.best_trial.number == min(study.get_trials(), key=lambda t: t.value).number  # all feasible


def _dataset(manifest: str) -> tuple[str, str, str]:
    """(name, digest, full hash) a run's input should show for `manifest`: provenance's content hash."""
    full = manifest_file("manifest", manifest).sha256
    assert full is not None, f"{manifest} is missing"
    return Path(manifest).name, full[:32], full


def _datasets(run) -> dict[str, tuple[str, str, str]]:
    """A run's dataset inputs by context (training, validation, test)."""
    found = {}
    for given in run.inputs.dataset_inputs:
        tags = {t.key: t.value for t in given.tags}
        found[tags["mlflow.data.context"]] = (given.dataset.name, given.dataset.digest, tags["manifest_sha256"])
    return found


def test_pruned_trial_is_killed_in_mlflow_and_stops_early(project, speech_data):
    spec = load_spec(write_spec(project, "prune", spec_dict(speech_data, budget={"trials": 2})))
    # A previous perfect trial (WER 0 at every step): any real trial is worse than the median.
    study = optuna.create_study(study_name="prune", storage=open_storage(spec.storage_url), direction="minimize")
    space = load_search_space(spec.search_space)
    params = {"lr": 1e-3, "batch_duration": 10, "freeze": "none", "use_loss_mask_for_prompt": True}
    study.add_trial(
        optuna.trial.create_trial(params=params, distributions=space, value=0.0, intermediate_values={10: 0.0, 20: 0.0})
    )
    study, client, parent, children = _run(spec)

    real = study.get_trials()[1]
    assert real.state == TrialState.PRUNED
    assert TrialRecord.of(real).pruned_at == 10
    run = children["trial-0001"]
    assert run.info.status == "KILLED"
    assert run.data.metrics["steps_trained"] == 10
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_wer")] == [10]
    assert "final_val_wer/en-en" in run.data.metrics  # per pair even when pruned: no decode of its own


def test_baseline_is_the_released_model_on_the_users_manifests(project, terse_data):
    """With custom behaviours, trials read prompted manifests; the zero-shot baseline must not (its
    decoder never learnt the placeholder tokens): its hypotheses are those of a plain transcribe()."""
    from nemo.collections.asr.models import EncDecMultiTaskModel

    terse = {"terse": {"on": "<|spltoken0|>", "off": "<|spltoken1|>", "field": "terse"}}
    data = {**terse_data, "test": terse_data["validation"]}  # a test set: its zero-shot score reads plain lines too
    spec = load_spec(write_spec(project, "released", spec_dict(data, full=True, behaviours=terse)))
    supervisor = Supervisor(spec, console=Console(file=io.StringIO(), width=200))
    baseline = supervisor.open().evaluations.baseline()
    assert {"val_wer", "val_wer_normalized", "val_bleu", "val_wer/en-en", "val_bleu/en-de"} <= set(baseline)
    # Each behaviour's figures on its lines (the pretrained model, no tokens): where a behaviour starts from.
    states = [json.loads(line)["terse"] for line in terse_data["validation"].read_text().splitlines()]
    assert set(states) == {True, False}
    assert {"val_wer/terse_on", "val_wer/terse_off", "val_wer_normalized/terse_on"} <= set(baseline)
    parent = MlflowClient(spec.tracking_uri).get_run(supervisor.parent_run).data.metrics
    assert parent["baseline_val_wer/terse_on"] == pytest.approx(baseline["val_wer/terse_on"])

    baseline_dir = TrialDir.of(spec, "baseline")
    lines = baseline_dir.predictions.read_text().splitlines()
    recorded = [json.loads(line)["hypothesis"] for line in lines]
    assert [json.loads(line)["behaviours"] for line in lines] == [{"terse": state} for state in states]
    model = EncDecMultiTaskModel.restore_from(str(supervisor.nemo), map_location="cpu").eval()
    plain = model.transcribe(str(terse_data["validation"]), batch_size=16, verbose=False)
    assert recorded == [h.text for h in plain]
    config = baseline_dir.config.read_text()
    assert "spltoken" not in config and trial_data(spec, baseline=True).validation in config

    # Its test-set score (beside the best trial's, for the intervals) decodes the plain copy and keeps its
    # transcripts as predictions, in the validation's format.
    supervisor.evaluations._test_baseline()
    tested = [json.loads(line) for line in TrialDir.of(spec, "test-baseline").predictions.read_text().splitlines()]
    assert [line["hypothesis"] for line in tested] == [h.text for h in plain]
    assert [line["behaviours"] for line in tested] == [{"terse": state} for state in states]
    scored = load_study(spec).user_attrs["test_baseline"]["metrics"]
    assert {"test_wer", "test_wer/terse_on", "test_bleu/en-de"} <= set(scored)
    assert MlflowClient(spec.tracking_uri).get_run(supervisor.parent_run).data.metrics["baseline_test_wer"] == (
        pytest.approx(scored["test_wer"])
    )


def test_out_of_memory_is_recorded_as_oom_infeasible_for_the_sampler_and_not_retried(project, speech_data, monkeypatch):
    """An OOM is a region of the search space, not a crash to retry: the same params run out again.
    Here batch_duration 20 runs out and 10 would fit; two earlier OOMs at 20 and this one do not stop
    the sweep (no trial at the smallest size yet), a fourth at 10 would."""
    monkeypatch.setenv(FAULT_ENV, "oom_above:10")
    spec = load_spec(write_spec(project, "oom", spec_dict(speech_data, budget={"trials": 3, "max_retries": 1})))
    study = optuna.create_study(study_name="oom", storage=open_storage(spec.storage_url), direction="minimize")
    space = load_search_space(spec.search_space)
    large = {"lr": 1e-3, "batch_duration": 20, "freeze": "none", "use_loss_mask_for_prompt": True}
    for _ in range(2):
        study.add_trial(_out_of_memory(large, space))
    study.enqueue_trial(large)
    out = io.StringIO()
    supervisor = Supervisor(spec, console=Console(file=out, width=200))
    supervisor.run()
    study, client, parent, children = _records(spec)

    trial = study.get_trials()[-1]  # the budget of 3 is used: OOMs count; no retry was queued
    assert [t.number for t in study.get_trials()] == [0, 1, 2] and trial.params == large
    assert trial.state == TrialState.PRUNED and trial.constraints == {MEMORY_CONSTRAINT: 1.0}
    record = TrialRecord.of(trial)
    assert record.fail_reason == "oom" and not record.requeued
    run = children["trial-0002"]
    assert run.info.status == STATUS[TrialState.FAIL] and run.data.tags["harness.fail_reason"] == "oom"
    tail = client.download_artifacts(run.info.run_id, "logs/trial-log-tail.txt", str(project))
    assert "OutOfMemoryError" in Path(tail).read_text()
    result = json.loads(TrialDir.of(spec, 2).result().read_text())
    assert result == {**result, "state": "fail", "reason": "oom"}
    assert "trial-0002 OOM out of memory" in out.getvalue()
    assert parent.info.status == "FINISHED" and not supervisor.recorder.repeated_failure()
    study.add_trial(_out_of_memory({**large, "batch_duration": 10}, space))  # the smallest size: give up
    assert [t.number for t in supervisor.recorder.repeated_failure()] == [0, 1, 2, 3]


def _out_of_memory(params: dict, space: dict) -> optuna.trial.FrozenTrial:
    """A trial recorded as the supervisor records an OOM: PRUNED, infeasible, `oom`."""
    return optuna.trial.create_trial(
        state=TrialState.PRUNED,
        params=params,
        distributions=space,
        user_attrs=TrialRecord.attrs(fail_reason=OOM, requeued=False),
        constraints={MEMORY_CONSTRAINT: 1.0},
    )


@pytest.mark.extended  # trains several trials: `make test-extended`
def test_pareto_sweep_optimises_wer_and_bleu_together(project, speech_data):
    spec = load_spec(
        write_spec(
            project,
            "pareto",
            spec_dict(
                speech_data, budget={"trials": 2}, objective={"metric": "pareto"}, training={"keep_checkpoints": "best"}
            ),
        )
    )
    study, client, parent, children = _run(spec)

    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE"]
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2  # never pruned
    for trial in trials:
        run = children[f"trial-{trial.number:04d}"]
        assert trial.values == pytest.approx([run.data.metrics["final_val_wer"], run.data.metrics["final_val_bleu"]])
    front = {t.number for t in study.best_trials}
    kept = {t.number for t in trials if TrialDir.of(spec, t.number).model.is_file()}
    assert kept == front


@pytest.mark.extended  # three trials end to end; tests/test_repeats.py checks the answers on real Optuna in seconds
def test_repeat_proposals_are_answered_from_the_trained_trial(project, speech_data):
    """A space of one combination and a budget of 3: the first trial (the `start_from` entry) trains, the sampler
    can only propose it again, and those two are answered from its result: one trial process, one MLflow run."""
    from harness.report import write_report
    from harness.report._summary import pruning_savings, trial_note

    params = {"lr": 1e-3, "batch_duration": 10, "freeze": "none", "use_loss_mask_for_prompt": True}
    one = {name: {"type": "categorical", "choices": [choice]} for name, choice in params.items()}
    (project / "search_spaces" / "one.yaml").write_text(yaml.safe_dump(one))
    spec = spec_dict(speech_data, search_space="search_spaces/one.yaml", start_from=[params])
    spec = load_spec(write_spec(project, "repeats", spec))
    out = io.StringIO()
    Supervisor(spec, console=Console(file=out, width=200)).run()
    study, client, parent, children = _records(spec)

    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert [TrialRecord.of(t).start_from for t in trials] == [0, None, None]
    assert [TrialRecord.of(t).repeat_of for t in trials] == [None, 0, 0]
    assert len({t.value for t in trials}) == 1 and all(t.params == params for t in trials)
    assert set(children) == {"trial-0000"}  # trained once
    assert sorted(p.name for p in spec.trials_dir.iterdir()) == [TrialDir.of(spec, 0).name]
    console = out.getvalue()
    assert f"trial-0000 started: {params_text(trials[0].params)} (start_from[0])" in console
    for number in (1, 2):
        line = f"trial-000{number} repeats trial-0000's params: answered from its result, nothing trained"
        assert f"{line} (COMPLETE objective={trials[0].value:.4f})" in console
    assert "3/3 trials used" in console
    repeat = "repeat of trial-0000: its result, nothing trained"
    assert [trial_note(t) for t in trials] == ["start_from[0]", repeat, repeat]
    assert pruning_savings(trials, spec.budget.max_steps).trials == 1  # the repeats saved nothing by pruning
    assert write_report(spec, html_report=False).markdown.read_text().count(repeat) == 2
