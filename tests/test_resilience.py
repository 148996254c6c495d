"""Sweeps that survive: killed trials, a killed supervisor, parallel workers, many hosts.

Each test drives the real `harness` command in subprocesses against real storage: SQLite files
here, PostgreSQL (127.0.0.1:5432) and an `mlflow server` on a loopback port for many hosts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from harness.spec import load_spec
from harness.stores import open_mlflow
from harness.trial_dir import TrialDir
from harness.trial_record import TrialRecord
from tests.conftest import spec_dict, write_spec
from tests.helpers import ctrl_c_default, load_study, mlflow_server, postgres_database, wait_for

HARNESS = [sys.executable, "-m", "harness.cli"]


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_leftover_processes():
    """A failing test must not leave a sweep (and its trials) running into the next test."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _start(args: list[str], cwd: Path, log: Path, **env) -> subprocess.Popen:
    proc = subprocess.Popen(
        [*HARNESS, *args],
        cwd=cwd,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
        start_new_session=True,
        preexec_fn=ctrl_c_default,
    )
    STARTED.append(proc)
    return proc


def _trial_pid(trial_dir: TrialDir) -> int | None:
    """The pid of a trial process once it has started training (its first validation is not needed)."""
    log = trial_dir.log
    if not log.exists() or "Train config" not in log.read_text(errors="replace"):
        return None
    out = subprocess.run(["pgrep", "-f", f"harness.trial {trial_dir}"], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else None


def _runs(spec):
    # open_mlflow takes the harness's creation lock: a bare MlflowClient polling a new SQLite file would race
    # the supervisor's schema creation ("table ... already exists").
    client = open_mlflow(spec.tracking_uri)
    experiment = client.get_experiment_by_name(spec.experiment_name)
    return client.search_runs([experiment.experiment_id], max_results=500)


def test_killed_trial_is_failed_retried_and_the_budget_met(project, speech_data):
    spec = load_spec(
        write_spec(
            project, "kill", spec_dict(speech_data, budget={"trials": 1, "max_steps": 20}, pruner={"type": "none"})
        )
    )
    sweep = _start(["sweep", "kill"], project, project / "sweep.log")
    pid = wait_for(lambda: _trial_pid(TrialDir.of(spec, 0)), 240, "trial-0000 to train")
    os.kill(pid, signal.SIGKILL)
    assert sweep.wait(timeout=600) == 0, (project / "sweep.log").read_text()[-3000:]

    trials = load_study(spec).get_trials()
    assert trials[0].state == TrialState.FAIL and TrialRecord.of(trials[0]).fail_reason == "killed"
    assert trials[1].params == trials[0].params and TrialRecord.of(trials[1]).retry_of == 0
    assert len(trials) == 2 and trials[1].state == TrialState.COMPLETE  # the retry does not use up the budget
    runs = {r.data.tags["mlflow.runName"]: r for r in _runs(spec)}
    assert runs["trial-0000"].info.status == "FAILED"
    assert not [r for r in runs.values() if r.info.status == "RUNNING"]


def test_killed_supervisor_resumes_without_losing_trials(project, speech_data):
    spec = load_spec(
        write_spec(
            project, "resume", spec_dict(speech_data, budget={"trials": 3, "max_steps": 20}, pruner={"type": "none"})
        )
    )
    first = _start(["sweep", "resume"], project, project / "first.log")
    wait_for(lambda: _trial_pid(TrialDir.of(spec, 1)), 400, "trial-0001 to train")
    os.killpg(first.pid, signal.SIGKILL)  # the supervisor dies; its trial process follows it
    first.wait()
    before = {t.number: t for t in load_study(spec).get_trials() if t.state == TrialState.COMPLETE}
    assert 0 in before and load_study(spec).get_trials()[1].state == TrialState.RUNNING

    second = _start(["sweep", "resume"], project, project / "second.log")
    assert second.wait(timeout=600) == 0, (project / "second.log").read_text()[-3000:]
    trials = load_study(spec).get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert trials[1].state == TrialState.FAIL and "supervisor died" in str(TrialRecord.of(trials[1]).fail_reason)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    for number, old in before.items():
        assert trials[number].value == old.value and trials[number].params == old.params
    statuses = {r.data.tags["mlflow.runName"]: r.info.status for r in _runs(spec)}
    assert statuses["trial-0001"] == "FAILED" and "RUNNING" not in statuses.values()
    assert sum(1 for r in _runs(spec) if r.data.tags.get("harness.role") == "sweep") == 1


@pytest.mark.extended  # trains several trials: `make test-extended`
def test_four_local_workers_share_one_study(project, speech_data):
    spec = load_spec(
        write_spec(
            project,
            "par",
            spec_dict(
                speech_data,
                budget={"trials": 4, "max_steps": 10, "val_check_interval": 10},
                pruner={"type": "none"},
                sampler={"type": "random", "seed": 3},
            ),
        )
    )
    sweep = _start(["sweep", "par", "--workers", "4"], project, project / "par.log")
    assert sweep.wait(timeout=900) == 0, (project / "par.log").read_text()[-3000:]

    trials = load_study(spec).get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4
    starts = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(b[0] < a[1] for a, b in zip(starts, starts[1:], strict=False)), "trials never overlapped"
    logs = "".join(TrialDir(d).log.read_text(errors="replace") for d in spec.trials_dir.glob("*"))
    logs += (project / "par.log").read_text()
    assert "database is locked" not in logs and "OperationalError" not in logs


def test_two_hosts_share_a_study_on_postgres_and_an_mlflow_server(project, speech_data):
    spec_path = write_spec(
        project,
        "multi",
        spec_dict(
            speech_data, budget={"trials": 3, "max_steps": 10, "val_check_interval": 10}, pruner={"type": "none"}
        ),
    )
    # Workers reach the server by a name other than localhost, as hosts do: MLflow must be told to accept it.
    server = mlflow_server(project / "mlflow", host="127.0.0.2", allowed_hosts="127.0.0.2:*,localhost:*")
    with postgres_database() as storage, server as tracking:
        args = ["worker", spec_path, "--storage", storage, "--tracking-uri", tracking]
        workers = [_start(args, project, project / f"worker{i}.log") for i in range(2)]
        for i, worker in enumerate(workers):
            assert worker.wait(timeout=900) == 0, (project / f"worker{i}.log").read_text()[-3000:]
        spec = load_spec(spec_path)
        spec.storage, spec.tracking.uri = storage, tracking
        trials = load_study(spec).get_trials()
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        assert len(complete) >= 3 and len({TrialRecord.of(t).worker for t in complete}) == 2
        runs = _runs(spec)
        parents = [r for r in runs if r.data.tags.get("harness.role") == "sweep"]
        assert len(parents) == 1
        children = {
            r.data.tags["mlflow.runName"]
            for r in runs
            if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id
        }
        assert {f"trial-{t.number:04d}" for t in trials} <= children


# -- stops a cluster sends: SIGTERM (scancel, preemption), Ctrl-C; trials that all fail alike ------


@pytest.mark.parametrize("command", ["sweep", "worker"])
def test_sigterm_stops_and_records_the_running_trial(project, speech_data, command):
    """`sweep`: SIGTERM to the supervisor alone (systemd, kill); `worker`: to its whole process group, as
    Slurm's scancel does, so the trial process gets it too."""
    spec = load_spec(
        write_spec(
            project, "term", spec_dict(speech_data, budget={"trials": 2, "max_steps": 400}, pruner={"type": "none"})
        )
    )
    args = ["sweep", "term"] if command == "sweep" else ["worker", "term", "--storage", spec.storage_url]
    proc = _start(args, project, project / "term.log")
    trial_pid = wait_for(lambda: _trial_pid(TrialDir.of(spec, 0)), 240, "trial-0000 to train")
    if command == "sweep":
        os.kill(proc.pid, signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    output = (project / "term.log").read_text()
    assert "Terminated (SIGTERM): recorded trial-0000 (FAIL: terminated, re-queued)" in output
    assert "Traceback" not in output
    wait_for(lambda: subprocess.run(["kill", "-0", str(trial_pid)], capture_output=True).returncode != 0, 10, "exit")

    (trial, retry) = load_study(spec).get_trials()
    record = TrialRecord.of(trial)
    assert trial.state == TrialState.FAIL and record.fail_reason == "terminated"
    assert record.requeued and retry.state == TrialState.WAITING
    assert retry.system_attrs["fixed_params"] == trial.params  # re-queued with the same params
    statuses = {r.data.tags["mlflow.runName"]: r.info.status for r in _runs(spec)}
    assert statuses == {"term": "KILLED", "trial-0000": "KILLED"}


def test_ctrl_c_during_the_baseline_ends_its_runs(project, speech_data):
    spec = load_spec(write_spec(project, "intr", spec_dict(speech_data, full=True)))
    proc = _start(["sweep", "intr"], project, project / "intr.log")
    wait_for(lambda: any(r.data.tags.get("mlflow.runName") == "baseline" for r in _runs_if_any(spec)), 240, "baseline")
    time.sleep(2)  # the baseline process is evaluating
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    output = (project / "intr.log").read_text()
    assert "Interrupted: recorded the zero-shot baseline (its run KILLED)" in output
    statuses = {r.data.tags["mlflow.runName"]: r.info.status for r in _runs(spec)}
    assert statuses == {"intr": "KILLED", "baseline": "KILLED"}
    assert "baseline" not in load_study(spec).user_attrs  # evaluated again on resume
    assert not load_study(spec).get_trials()


def _runs_if_any(spec):
    try:
        return _runs(spec)
    except Exception:  # the store or experiment does not exist yet
        return []


@pytest.mark.extended  # three failing trial processes: `make test-extended`
def test_trials_that_all_fail_alike_stop_the_sweep_early(project, speech_data):
    spec = load_spec(write_spec(project, "doomed", spec_dict(speech_data, budget={"trials": 6, "max_retries": 1})))
    proc = _start(["sweep", "doomed"], project, project / "doomed.log", HARNESS_INJECT_FAULT="broken")
    assert proc.wait(timeout=600) == 2
    output = (project / "doomed.log").read_text()
    assert "Stopped early: the first 3 trials of sweep doomed all failed with the same error" in output
    assert "injected fault 'broken'" in output and "trial-0002" in output
    states = [t.state for t in load_study(spec).get_trials()]  # the last failure's retry waits for a resume
    assert states == [TrialState.FAIL] * 3 + [TrialState.WAITING]
    parent = next(r for r in _runs(spec) if r.data.tags.get("harness.role") == "sweep")
    assert parent.info.status == "FAILED"


def test_a_sweep_without_a_complete_trial_exits_non_zero(project, speech_data):
    spec = load_spec(write_spec(project, "none", spec_dict(speech_data, budget={"trials": 1, "max_retries": 0})))
    proc = _start(["sweep", "none"], project, project / "none.log", HARNESS_INJECT_FAULT="oom")
    assert proc.wait(timeout=600) == 1
    assert "the sweep ended with no complete trial" in (project / "none.log").read_text()
    assert [TrialRecord.of(t).fail_reason for t in load_study(spec).get_trials()] == ["oom"]
