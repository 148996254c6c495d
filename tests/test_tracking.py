"""harness.tracking: one parent run per study, child runs under it, params and metrics as logged.

A real SQLite MLflow store per test (a copy of one migrated empty store, so each test starts in
milliseconds, not the seconds MLflow's schema migration takes); no training, no server.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import pytest
from mlflow.entities import ViewType

import harness.tracking as tracking
from harness import provenance
from harness.tracking import KIND_TAG, PARENT_ROLE, TRIAL_ROLE, UID_TAG, Tracker, runs_link, runs_view_key

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow SQLite file with its schema made and nothing in it."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    Tracker(f"sqlite:///{path}", "warm-up", create=False)
    return path


@pytest.fixture
def uri(empty_store, tmp_path, monkeypatch) -> str:
    path = tmp_path / "mlruns" / "mlflow.db"
    path.parent.mkdir()
    shutil.copy(empty_store, path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tracking, "git_commit", lambda: COMMIT)
    return f"sqlite:///{path}"


@pytest.fixture
def tracker(uri, tmp_path) -> Tracker:
    return Tracker(uri, "sweep-a", artifact_root=tmp_path / "mlruns" / "artifacts")


def _parent(tracker: Tracker, uid: str = "uid-1", **kwargs) -> str:
    args = {"sweep": "sweep-a", "study_uid": uid, "params": {}, "tags": {}, **kwargs}
    return tracker.parent_run(**args)


# -- the experiment ------------------------------------------------------------------------------


def test_the_experiment_is_created_once_with_its_artifacts_next_to_the_database(uri, tmp_path):
    first = Tracker(uri, "sweep-a", artifact_root=tmp_path / "mlruns" / "artifacts")
    again = Tracker(uri, "sweep-a", artifact_root=tmp_path / "elsewhere")
    assert again.experiment_id == first.experiment_id
    location = first.client.get_experiment(first.experiment_id).artifact_location
    assert location == (tmp_path / "mlruns" / "artifacts" / "sweep-a").as_uri()  # not ./mlruns of the CWD

    run = first.child_run(_parent(first), name="trial-0000", role=TRIAL_ROLE, params={}, tags={})
    config = tmp_path / "config.yaml"
    config.write_text("lr: 0.001\n")
    first.log_artifact(run, config, "config")
    assert (tmp_path / "mlruns" / "artifacts" / "sweep-a" / run / "artifacts" / "config" / "config.yaml").is_file()


def test_looking_without_create_makes_nothing(uri):
    looker = Tracker(uri, "absent", create=False)
    assert looker.experiment_id is None
    assert looker.parents(study_uid="uid-1") == [] and looker.parents() == []
    assert looker.client.get_experiment_by_name("absent") is None

    Tracker(uri, "present")
    found = Tracker(uri, "present", create=False)
    assert found.experiment_id == found.client.get_experiment_by_name("present").experiment_id


# -- the parent run ------------------------------------------------------------------------------


def test_the_parent_run_carries_role_sweep_uid_commit_tags_and_formatted_params(tracker):
    run_id = _parent(
        tracker, params={"model": "canary-tiny", "lr_low": 0.1 + 0.2, "trials": 3}, tags={"harness.host": "node7"}
    )
    run = tracker.client.get_run(run_id)
    assert run.info.run_name == "sweep-a" and run.info.status == "RUNNING"
    assert run.data.tags["harness.role"] == PARENT_ROLE == "sweep"
    assert run.data.tags["harness.sweep"] == "sweep-a"
    assert run.data.tags[UID_TAG] == "uid-1"
    assert run.data.tags["harness.host"] == "node7"
    assert run.data.tags["mlflow.source.git.commit"] == COMMIT
    assert run.data.params == {"model": "canary-tiny", "lr_low": "0.3", "trials": "3"}


def test_without_a_git_checkout_no_commit_tag_is_set(tracker, monkeypatch):
    monkeypatch.setattr(tracking, "git_commit", lambda: None)
    parent = _parent(tracker)
    child = tracker.child_run(parent, name="trial-0000", role=TRIAL_ROLE, params={}, tags={})
    for run_id in (parent, child):
        assert "mlflow.source.git.commit" not in tracker.client.get_run(run_id).data.tags


def test_a_study_finds_its_own_parent_run_again_and_never_another_studys(tracker, uri):
    first = _parent(tracker, uid="uid-1", params={"model": "canary-tiny"})
    # Resume, or a second worker (its own Tracker): the same run, no second one, params not logged twice.
    assert _parent(Tracker(uri, "sweep-a"), uid="uid-1", params={"model": "changed"}) == first
    assert tracker.client.get_run(first).data.params == {"model": "canary-tiny"}
    # The same sweep name with a recreated study (a new uid) gets a parent run of its own.
    second = _parent(tracker, uid="uid-2")
    assert second != first

    assert [r.info.run_id for r in tracker.parents(study_uid="uid-1")] == [first]
    assert [r.info.run_id for r in tracker.parents(study_uid="uid-2")] == [second]
    assert [r.info.run_id for r in tracker.parents(sweep="sweep-a")] == [first, second]  # oldest first
    assert tracker.parents(study_uid="uid-3") == [] and tracker.parents(sweep="other") == []


def test_parents_are_only_active_sweep_runs_of_this_experiment(tracker, uri):
    parent = _parent(tracker)
    tracker.child_run(parent, name="trial-0000", role=TRIAL_ROLE, params={}, tags={UID_TAG: "uid-1"})
    _parent(Tracker(uri, "sweep-b"), uid="uid-1")  # same uid, other experiment
    deleted = _parent(tracker, uid="uid-gone")
    tracker.client.delete_run(deleted)

    assert [r.info.run_id for r in tracker.parents()] == [parent]
    assert [r.info.run_id for r in tracker.parents(study_uid="uid-1")] == [parent]
    assert tracker.parents(study_uid="uid-gone") == []


def test_workers_that_create_a_parent_at_once_agree_on_the_oldest(tracker, monkeypatch):
    """The other worker's run is older: this one deletes its duplicate and returns the other's."""
    now = int(time.time() * 1000)
    tags = {"harness.role": PARENT_ROLE, "harness.sweep": "sweep-a", UID_TAG: "uid-1"}
    other = tracker.client.create_run(tracker.experiment_id, run_name="sweep-a", tags=tags, start_time=now - 60_000)
    real_parents = tracker.parents
    calls = []

    def racing(**kwargs):  # the first look happened before the other worker's run existed
        calls.append(kwargs)
        return [] if len(calls) == 1 else real_parents(**kwargs)

    monkeypatch.setattr(tracker, "parents", racing)
    winner = _parent(tracker, params={"model": "canary-tiny"})

    assert winner == other.info.run_id
    assert len(calls) == 2
    monkeypatch.undo()
    assert [r.info.run_id for r in tracker.parents(study_uid="uid-1")] == [winner]  # exactly one parent
    assert tracker.client.get_run(winner).data.params == {}  # the loser logs nothing on the winner's run
    (duplicate,) = tracker.client.search_runs([tracker.experiment_id], run_view_type=ViewType.DELETED_ONLY)
    assert duplicate.info.run_id != winner and duplicate.data.tags[UID_TAG] == "uid-1"


def test_sweep_run_accepts_only_an_active_parent_run_of_this_experiment(tracker, uri):
    parent = _parent(tracker)
    child = tracker.child_run(parent, name="trial-0000", role=TRIAL_ROLE, params={}, tags={})
    foreign = _parent(Tracker(uri, "sweep-b"))
    gone = _parent(tracker, uid="uid-gone")
    tracker.client.delete_run(gone)

    assert tracker.sweep_run(parent).info.run_id == parent
    assert tracker.sweep_run(child) is None
    assert tracker.sweep_run(foreign) is None
    assert tracker.sweep_run(gone) is None
    assert tracker.sweep_run("0" * 32) is None  # not a run at all: no exception


# -- child runs, params, metrics, tags, status ---------------------------------------------------


def test_child_runs_nest_under_their_parent_with_role_and_params(tracker):
    parent = _parent(tracker)
    other_parent = _parent(tracker, uid="uid-2")
    params = {"lr": 0.0001 * 3, "batch_duration": 20, "freeze": "encoder_bn_se", "use_loss_mask_for_prompt": False}
    child = tracker.child_run(parent, name="trial-0007", role=TRIAL_ROLE, params=params, tags={"harness.worker": "w1"})
    baseline = tracker.child_run(parent, name="baseline", role="baseline", params={}, tags={})
    tracker.child_run(other_parent, name="trial-0000", role=TRIAL_ROLE, params={}, tags={})

    run = tracker.client.get_run(child)
    assert run.info.run_name == "trial-0007"
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["harness.role"] == "trial" and run.data.tags["harness.worker"] == "w1"
    assert run.data.tags["mlflow.source.git.commit"] == COMMIT
    # 0.0001 * 3 is 0.00030000000000000003: logged as 0.0003, as reports and the CLI print it.
    assert run.data.params == {
        "lr": "0.0003",
        "batch_duration": "20",
        "freeze": "encoder_bn_se",
        "use_loss_mask_for_prompt": "False",
    }
    assert {r.info.run_id for r in tracker.children(parent)} == {child, baseline}


def test_log_params_formats_floats_to_four_significant_digits(tracker):
    run = _parent(tracker)
    tracker.log_params(run, {"a": 1 / 3, "b": 1e-7, "c": 12345.678, "d": 2.0, "e": None, "f": [10, 20]})
    assert tracker.client.get_run(run).data.params == {
        "a": "0.3333",
        "b": "1e-07",
        "c": "1.235e+04",
        "d": "2",
        "e": "None",
        "f": "[10, 20]",
    }


def test_log_metrics_skips_nan_and_none_and_keeps_the_step(tracker):
    run = _parent(tracker)
    tracker.log_metrics(run, {"val_wer": 0.25, "val_bleu": math.nan, "val_wer/en-de": None, "steps": 20}, step=10)
    tracker.log_metrics(run, {"val_wer": 0.2}, step=20)
    tracker.log_metrics(run, {"objective": 0.2})

    metrics = tracker.client.get_run(run).data.metrics
    assert metrics == {"val_wer": 0.2, "steps": 20.0, "objective": 0.2}
    assert [(m.step, m.value) for m in tracker.client.get_metric_history(run, "val_wer")] == [(10, 0.25), (20, 0.2)]
    assert [m.step for m in tracker.client.get_metric_history(run, "objective")] == [0]
    assert tracker.client.get_metric_history(run, "val_bleu") == []


def test_set_tags_and_end_run(tracker):
    run = _parent(tracker)
    tracker.set_tags(run, {"harness.fail_reason": "oom", "harness.state": "fail"})
    tracker.end_run(run, "FAILED")
    info = tracker.client.get_run(run)
    assert info.info.status == "FAILED" and info.info.end_time is not None
    assert {"harness.fail_reason": "oom", "harness.state": "fail"}.items() <= info.data.tags.items()

    for status in ("FINISHED", "KILLED"):
        tracker.end_run(run, status)
        assert tracker.client.get_run(run).info.status == status
    with pytest.raises(ValueError, match="unknown run status 'PRUNED'"):
        tracker.end_run(run, "PRUNED")
    assert tracker.client.get_run(run).info.status == "KILLED"


# -- what the MLflow UI shows: the experiment's kind, the runs view, the manifests as datasets ----


def test_the_experiment_is_marked_as_model_training_and_a_kind_set_by_hand_is_kept(tracker, uri):
    assert tracker.client.get_experiment(tracker.experiment_id).tags[KIND_TAG] == "custom_model_development"
    # An experiment of an older harness gets the tag when a sweep opens it; one a user re-kinded keeps its kind.
    older = tracker.client.create_experiment("older")
    kept = tracker.client.create_experiment("kept", tags={KIND_TAG: "finetuning"})
    Tracker(uri, "older"), Tracker(uri, "kept")
    assert tracker.client.get_experiment(older).tags[KIND_TAG] == "custom_model_development"
    assert tracker.client.get_experiment(kept).tags[KIND_TAG] == "finetuning"
    looked = tracker.client.create_experiment("looked")
    Tracker(uri, "looked", create=False)  # looking changes nothing
    assert KIND_TAG not in tracker.client.get_experiment(looked).tags


def test_the_runs_view_and_the_link_that_opens_it(tracker, uri):
    key = runs_view_key("my sweep/v2")
    assert key == "my_sweep_v2"
    assert not tracker.has_runs_view(key)
    tracker.save_runs_view(
        key, params=["lr", "freeze"], metrics=["objective", "peak_rss_mb"], order_by="objective", ascending=False
    )
    assert tracker.has_runs_view(key) and not tracker.has_runs_view("other")
    view = json.loads(tracker.client.get_experiment(tracker.experiment_id).tags[f"mlflow.sharedViewState.{key}"])
    assert view == {
        "orderByKey": "metrics.`objective`",
        "orderByAsc": False,
        "selectedColumns": [
            "attributes.`Dataset`",
            "params.`lr`",
            "params.`freeze`",
            "metrics.`objective`",
            "metrics.`peak_rss_mb`",
        ],
    }
    eid = tracker.experiment_id
    assert runs_link("http://h:5000/", eid, key) == (
        f"http://h:5000/#/experiments/{eid}/runs?workflowType=machine_learning&viewStateShareKey=my_sweep_v2"
    )
    assert runs_link("http://h:5000", eid) == f"http://h:5000/#/experiments/{eid}/runs?workflowType=machine_learning"
    assert runs_link("http://h:5000", None) == "http://h:5000/#/experiments?workflowType=machine_learning"
    assert not Tracker(uri, "absent", create=False).has_runs_view(key)


def _manifest(folder: Path, name: str, texts: list[str]) -> Path:
    """A manifest whose audio files are a few distinct bytes (provenance hashes bytes; nothing decodes them)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, text in enumerate(texts):
        (folder / f"{name}-{i}.wav").write_bytes(f"RIFF {name} {i}".encode())
        lines.append(json.dumps({"audio_filepath": f"{name}-{i}.wav", "duration": 1.5, "text": text}))
    path = folder / f"{name}.json"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_log_manifests_names_each_manifest_by_context_and_content_hash(tracker, tmp_path):
    train = _manifest(tmp_path / "data", "train", ["a b", "c d", "e f"])
    validation = _manifest(tmp_path / "data", "validation", ["g h"])
    cache = tmp_path / "mlruns" / "audio-sha256.json"
    run = tracker.child_run(_parent(tracker), name="trial-0000", role=TRIAL_ROLE, params={}, tags={})
    tracker.log_manifests(run, {"training": train, "validation": str(validation), "test": None}, cache)

    inputs = tracker.client.get_run(run).inputs.dataset_inputs
    by_context = {{t.key: t.value for t in i.tags}["mlflow.data.context"]: i for i in inputs}
    assert set(by_context) == {"training", "validation"}
    for context, path, rows in (("training", train, 3), ("validation", validation, 1)):
        full = provenance.manifest_file(context, str(path)).sha256  # the report's hash: audio bytes + fields
        logged = by_context[context]
        assert logged.dataset.name == path.name
        assert logged.dataset.digest == full[:32] and len(logged.dataset.digest) == 32
        assert {t.key: t.value for t in logged.tags}["manifest_sha256"] == full
        assert json.loads(logged.dataset.source) == {"uri": path.resolve().as_uri()}
        assert json.loads(logged.dataset.profile)["num_rows"] == rows
    assert cache.is_file()  # provenance's audio hash cache, shared with the report

    # The same data elsewhere is the same dataset; a changed transcript is another.
    copy = _manifest(tmp_path / "copy", "train", ["a b", "c d", "e f"])
    changed = _manifest(tmp_path / "changed", "train", ["a b", "c d", "e F"])
    other = tracker.child_run(_parent(tracker), name="trial-0001", role=TRIAL_ROLE, params={}, tags={})
    tracker.log_manifests(other, {"training": copy, "validation": changed})
    digests = {i.dataset.digest for i in tracker.client.get_run(other).inputs.dataset_inputs}
    assert by_context["training"].dataset.digest in digests and len(digests) == 2


def test_log_manifests_logs_several_manifests_of_one_context(tracker, tmp_path):
    """Retention sets: one context, each manifest its own dataset."""
    old = _manifest(tmp_path / "data", "commands", ["a b"])
    general = _manifest(tmp_path / "data", "general", ["c d", "e f"])
    run = _parent(tracker)
    tracker.log_manifests(run, {"retention": [old, str(general)], "test": []})
    inputs = tracker.client.get_run(run).inputs.dataset_inputs
    assert sorted(i.dataset.name for i in inputs) == ["commands.json", "general.json"]
    assert {{t.key: t.value for t in i.tags}["mlflow.data.context"] for i in inputs} == {"retention"}


def test_log_manifests_skips_a_missing_manifest(tracker, tmp_path):
    run = _parent(tracker)
    tracker.log_manifests(run, {"training": tmp_path / "absent.json"})
    assert tracker.client.get_run(run).inputs.dataset_inputs == []


def test_the_printed_command_opens_the_runs_view_of_a_local_store(tracker, uri, monkeypatch):
    from harness.report._console import mlflow_ui_command
    from harness.spec import DataSpec, SweepSpec, TrackingSpec

    monkeypatch.delenv("HARNESS_TRACKING_URI", raising=False)
    spec = SweepSpec(
        name="sweep-a",
        model="canary-tiny",
        data=DataSpec("t.json", "v.json"),
        search_space="s.yaml",
        tracking=TrackingSpec(uri),
    )
    eid = tracker.experiment_id
    serve = f"mlflow ui --backend-store-uri {uri}, then open http://127.0.0.1:5000/#/experiments"
    assert mlflow_ui_command(spec) == f"{serve}/{eid}/runs?workflowType=machine_learning"  # no view saved yet
    tracker.save_runs_view("sweep-a", params=["lr"], metrics=["objective"], order_by="objective", ascending=True)
    assert mlflow_ui_command(spec).endswith(f"/{eid}/runs?workflowType=machine_learning&viewStateShareKey=sweep-a")
    spec.tracking.experiment = "never-made"
    assert mlflow_ui_command(spec) == f"{serve}?workflowType=machine_learning"
