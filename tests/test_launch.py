"""`harness launch`: worker jobs through submitit on one shared study; the Slurm script; refusals.

The local runs start real submitit jobs (each a `harness worker` process) on SQLite stores; the Slurm
tests here only print the script, which needs neither `sbatch` nor any store (tests/test_slurm.py submits
to a real Slurm).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from harness.cli import main
from harness.errors import SpecError
from harness.launch import INSTALL_HINT
from harness.spec import SweepSpec, load_spec
from harness.trial_dir import TrialDir
from harness.trial_record import TrialRecord
from tests.conftest import spec_dict, write_spec
from tests.helpers import ctrl_c_default, load_study, wait_for

PG = "postgresql://optuna@db.example:5432/optuna"  # never contacted: a dry run opens no store
MLFLOW = "http://mlflow-host:5000"
SLURM = {
    "executor": "slurm",
    "workers": 4,
    "gpus_per_worker": 2,
    "partition": "gpu-long",
    "account": "speech",
    "time_minutes": 90,
    "container_image": "nvcr.io/nvidia/nemo:25.04",
    "container_mounts": ["/shared:/shared"],
    "env": {"NCCL_DEBUG": "WARN"},
    "setup": ["source /shared/venv/bin/activate"],
}


def _said(capsys) -> str:
    """What the command printed, with rich's line wrapping undone."""
    return " ".join(capsys.readouterr().out.split())


def _logs(project: Path, name: str) -> list[Path]:
    return sorted((project / "mlruns" / "launch" / name).glob("*_log.out"))


def _parent_runs(spec) -> list:
    client = MlflowClient(spec.tracking_uri)
    experiment = client.get_experiment_by_name(spec.experiment_name)
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    return [r for r in runs if r.data.tags.get("harness.role") == "sweep"]


# ~60 s: `make test-extended` (beside its four-worker test) keeps `make test` under 15 minutes
@pytest.mark.extended
def test_local_workers_share_one_study(project, speech_data, capsys):
    # 4 validation lines, not 12: an untrained decode runs to its length limit, the slowest part on 2 CPU cores
    validation = project / "validation.json"
    validation.write_text("\n".join(speech_data["validation"].read_text().splitlines()[:4]) + "\n")
    data = {"train": speech_data["train"], "validation": validation}
    budget = {"trials": 2, "max_steps": 10, "val_check_interval": 10}
    spec_yaml = spec_dict(data, budget=budget, pruner={"type": "none"})
    spec = load_spec(write_spec(project, "duo", {**spec_yaml, "launch": {"executor": "local", "workers": 2}}))

    assert main(["launch", "duo"]) == 0, capsys.readouterr().out
    said = _said(capsys)
    assert "2 of 2 worker job(s) succeeded." in said

    logs = _logs(project, "duo")
    assert len(logs) == 2 and all(str(log) in said for log in logs)
    for log in logs:
        text = log.read_text()
        assert f"this job runs `cd {project} && " in text and f"worker {project / 'sweeps' / 'duo.yaml'}" in text
        # it ran the sweep to its end, and its closing table lists both trials: it read the one shared study
        # (the worker that ends first may list the other's trial as still RUNNING)
        assert "Report:" in text and "│ trial-0000 │" in text and "│ trial-0001 │" in text
    complete = [t for t in load_study(spec).get_trials() if t.state == TrialState.COMPLETE]
    assert len(complete) >= 2  # each worker may start one trial past the budget
    workers = {TrialRecord.of(t).worker for t in complete}
    # Two workers, each on its own trial; the race may rarely let the first take both (the logs above hold anyway).
    assert len(workers) == 2 or len(complete) == 2 and len(workers) == 1
    assert len(_parent_runs(spec)) == 1


def test_a_failed_local_worker_fails_the_launch_and_names_its_log(project, speech_data, capsys):
    data = {"train": str(project / "missing.json"), "validation": str(speech_data["validation"])}
    write_spec(project, "broken", spec_dict(data, launch={"workers": 1, "gpus_per_worker": 0}))
    assert main(["launch", "broken"]) == 1
    said = _said(capsys)
    (log,) = _logs(project, "broken")
    assert "FAILED: harness worker exited with 2" in said and f"Logs of the failed workers: {log}" in said
    assert "missing.json" in log.read_text()


def _jobs_written(spec: SweepSpec) -> int:
    """The processes of the sweep whose job file is written."""
    return sum(TrialDir(d).job.is_file() for d in spec.trials_dir.glob("*"))


def test_ctrl_c_stops_every_local_worker_and_records_their_trials(project, speech_data):
    spec_yaml = spec_dict(speech_data, budget={"trials": 4, "max_steps": 400}, pruner={"type": "none"})
    spec = load_spec(write_spec(project, "intr", {**spec_yaml, "launch": {"workers": 2}}))
    log = project / "launch.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "launch", "intr"],
            cwd=project,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group, as a terminal's foreground job
            preexec_fn=ctrl_c_default,
        )
    try:  # both workers are in their loop, each with a trial process starting
        wait_for(lambda: _jobs_written(spec) >= 2, 300, "two trials to start")
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group gets SIGINT
        assert proc.wait(timeout=120) == 130, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    left = subprocess.run(["pgrep", "-f", str(project)], capture_output=True, text=True).stdout.split()
    assert not left, f"left running: {left}"
    output = log.read_text()
    assert "worker 1" in output and "worker 2" in output and "exited with 130" in output
    assert "Traceback" not in output  # submitit's controllers ignored the Ctrl-C: they would kill a worker at 1 s
    for log in _logs(project, "intr"):  # each worker recorded its own stop
        assert "recorded trial-" in log.read_text()  # Interrupted, or Terminated by launch after its grace period
    trials = load_study(spec).get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert any(t.user_attrs.get("fail_reason") == "interrupted" for t in trials)


def test_slurm_dry_run_prints_the_sbatch_script(project, speech_data, capsys, monkeypatch, tmp_path_factory):
    tmp = tmp_path_factory.getbasetemp()  # the checkout and the manifests: the container must see them (test_slurm.py)
    launch = {**SLURM, "container_mounts": [*SLURM["container_mounts"], f"{tmp}:{tmp}"]}
    spec = spec_dict(speech_data, storage=PG, tracking={"uri": MLFLOW}, training={"devices": 2}, launch=launch)
    write_spec(project, "canary", spec)
    monkeypatch.setenv("PATH", str(tmp_path_factory.mktemp("no-slurm")))  # no sbatch, no srun
    before = sorted(project.rglob("*"))

    assert main(["launch", "canary", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("#!/bin/bash") == 1 and "one job array of 4 tasks" in out
    for line in (
        "#SBATCH --partition=gpu-long",
        "#SBATCH --account=speech",
        "#SBATCH --time=90",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --array=0-3%4",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --requeue",
        "export NCCL_DEBUG=WARN",
        "source /shared/venv/bin/activate",
    ):
        assert line in out.splitlines(), line
    (srun,) = [line for line in out.splitlines() if line.startswith("srun ")]
    assert f"--container-image=nvcr.io/nvidia/nemo:25.04 --container-mounts=/shared:/shared,{tmp}:{tmp}" in srun
    assert srun.endswith(f"python -u -m submitit.core._submit {project}/mlruns/launch/canary")
    (worker,) = [line for line in out.splitlines() if "-m harness worker" in line]
    redacted = "'postgresql://***@db.example:5432/optuna'"  # a URL's user and password stay out of scripts
    assert f"worker {project}/sweeps/canary.yaml --storage {redacted} --tracking-uri {MLFLOW}" in worker
    assert worker.startswith("# ")  # a comment in the script: the srun line runs submitit's pickled call
    assert out.index("source /shared/venv/bin/activate") < out.index("srun ")
    assert sorted(project.rglob("*")) == before  # nothing written, nothing submitted

    write_spec(project, "canary", {**spec, "launch": {**launch, "array": False}})
    assert main(["launch", "canary", "--dry-run", "--partition", "debug", "--time-minutes", "30"]) == 0
    out = capsys.readouterr().out
    assert out.count("#!/bin/bash") == 4 and "--array" not in out
    assert out.count("#SBATCH --partition=debug") == 4 and out.count("#SBATCH --time=30") == 4


def test_slurm_dry_run_without_a_container_runs_this_python(project, speech_data, capsys, monkeypatch):
    write_spec(project, "plain", spec_dict(speech_data, storage=PG, tracking={"uri": MLFLOW}))
    options = ["--executor", "slurm", "--workers", "1", "--gpus-per-worker", "0", "--dry-run"]
    assert main(["launch", "plain", *options]) == 0
    out = capsys.readouterr().out
    assert "--array" not in out and "--gpus-per-node" not in out and "--container-image" not in out
    assert f"{sys.executable} -u -m submitit.core._submit" in out
    assert " --workers 1" in out  # a job without GPUs runs one trial at a time


@pytest.mark.parametrize(
    ("storage", "tracking", "named"),
    [(None, MLFLOW, "`storage:` in the sweep spec, `--storage`"), (PG, None, "`tracking.uri` in the sweep spec")],
)
def test_slurm_refuses_stores_other_hosts_cannot_share(project, speech_data, capsys, storage, tracking, named):
    write_spec(project, "local", spec_dict(speech_data, storage=storage, tracking={"uri": tracking}))
    assert main(["launch", "local", "--executor", "slurm", "--dry-run"]) == 2
    said = _said(capsys)
    assert named in said and "Slurm workers run on other hosts" in said
    assert not (project / "mlruns").exists()


@pytest.mark.parametrize(
    ("launch", "message"),
    [
        ({"executor": "pbs"}, "`launch.executor` is 'pbs'; use one of local, slurm"),
        ({"workers": 0}, "`launch.workers` is 0; it must be at least 1"),
        ({"setup": "source x"}, "`launch.setup` must be a list"),
        ({"container_mounts": [3]}, "`launch.container_mounts[0]` must be str"),
        ({"env": {"MLFLOW_TRACKING_PASSWORD": "x"}}, "`launch.env.MLFLOW_TRACKING_PASSWORD` looks like a credential"),
    ],
)
def test_launch_values_are_checked_on_load(project, launch, message):
    write_spec(project, "bad", spec_dict({"train": "t.json", "validation": "v.json"}, launch=launch))
    with pytest.raises(SpecError, match=re.escape(message)):
        load_spec("bad")


def test_worker_gpus_must_hold_whole_trials(project, capsys):
    spec = spec_dict({"train": "t.json", "validation": "v.json"}, training={"devices": 2})
    assert load_spec(write_spec(project, "ddp", spec)).launch.gpus_per_worker == 1  # loads: only launch needs more
    assert main(["launch", "ddp", "--dry-run", "--gpus-per-worker", "3"]) == 2
    assert "`launch.gpus_per_worker` is 3, but each trial takes `training.devices` = 2 GPUs" in _said(capsys)


def test_missing_submitit_names_the_install(project, capsys, monkeypatch):
    write_spec(project, "x", spec_dict({"train": "t.json", "validation": "v.json"}))
    monkeypatch.setitem(sys.modules, "submitit", None)
    assert main(["launch", "x", "--dry-run"]) == 2
    assert INSTALL_HINT in _said(capsys)


def test_local_jobs_get_distinct_gpus_from_the_visible_ones(project, capsys, monkeypatch):
    monkeypatch.setattr("harness.devices.visible_gpus", lambda: 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,4,5")  # a scheduler's share of the machine
    write_spec(project, "gpus", spec_dict({"train": "t.json", "validation": "v.json"}, training={"devices": 2}))
    assert main(["launch", "gpus", "--gpus-per-worker", "2", "--dry-run"]) == 0
    said = _said(capsys)
    assert "GPUs per job: 2,3 | 4,5" in said and "--workers 1" not in said  # each worker: one 2-GPU trial
    assert main(["launch", "gpus", "--gpus-per-worker", "2", "--workers", "3", "--dry-run"]) == 2
    assert "needs 6 GPUs, but this machine shows 4" in _said(capsys)
