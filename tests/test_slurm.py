"""`harness launch --executor slurm` against a real Slurm on this host (tests/slurm_cluster.py).

The jobs run `harness worker` on a PostgreSQL study (a new database per test) and an `mlflow server` on a
loopback port, as workers on a cluster's nodes do. What users meet there: an array that meets the budget,
`scancel`, the time limit, a requeue (preemption), requests the partition cannot satisfy, Slurm missing or
down. The container checks and `launch.requeue` need no Slurm (`--dry-run`). Without root or without
slurm-wlm and munge the Slurm tests skip; `scripts/setup.sh test` installs them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from optuna.trial import TrialState

from harness.cli import main
from harness.errors import LaunchError
from harness.launch._jobs import STOP_WARNING_SECONDS
from harness.launch._partition import (
    DEFAULT_CPUS_PER_WORKER,
    Node,
    Partition,
    check_request,
    read_partition,
    worker_cpus,
)
from harness.names import LAUNCH_JOBS_ATTR
from harness.report import report_dir
from harness.spec import SweepSpec, load_spec
from harness.stores import open_mlflow
from harness.trial_dir import TrialDir
from harness.trial_record import TrialRecord
from tests.conftest import spec_dict, write_spec
from tests.helpers import load_study, mlflow_server, postgres_database, wait_for
from tests.slurm_cluster import SlurmCluster, missing, slurm_cluster

pytestmark = pytest.mark.xdist_group("slurm")  # one cluster per session: every test here on one pytest worker

JOB_SECONDS = 600  # a worker job on 2 shared CPU cores: start, one short trial, the report
NEVER = "postgresql://optuna@db.example:5432/optuna"  # a refusal before the stores are opened never contacts it


@pytest.fixture(scope="session")
def slurm_session() -> Iterator[SlurmCluster]:
    reason = missing()
    if reason:
        pytest.skip(reason)
    with slurm_cluster() as cluster:
        print(f"Slurm up in {cluster.up_seconds:.1f} s")
        yield cluster


@pytest.fixture
def slurm(slurm_session, monkeypatch) -> Iterator[SlurmCluster]:
    """The cluster, named by `SLURM_CONF` for this test (and the jobs it submits, which inherit it); a job a
    failed test leaves behind is cancelled, so the next test starts on an empty queue."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_session.conf))
    yield slurm_session
    slurm_session.cancel_all()


@pytest.fixture(scope="session")
def tracking(slurm_session, tmp_path_factory) -> Iterator[str]:
    """One MLflow server for the Slurm tests (each sweep its own experiment)."""
    with mlflow_server(tmp_path_factory.mktemp("slurm-mlflow") / "server") as uri:
        yield uri


@pytest.fixture
def storage() -> Iterator[str]:
    with postgres_database() as url:
        yield url


def _sweep(project: Path, speech_data, name: str, storage: str, tracking: str, **options) -> SweepSpec:
    """A short sweep of CPU worker jobs of one CPU each (`budget` and `launch` keys in `options`)."""
    validation = project / "validation.json"  # 4 lines: an untrained decode is the slowest part on 2 CPU cores
    validation.write_text("\n".join(speech_data["validation"].read_text().splitlines()[:4]) + "\n")
    budget = {"trials": 1, "max_steps": 20, "val_check_interval": 10, **options.pop("budget", {})}
    launch = {"executor": "slurm", "workers": 1, "gpus_per_worker": 0, "cpus_per_worker": 1, "time_minutes": 10}
    spec = spec_dict(
        {"train": speech_data["train"], "validation": validation},
        budget=budget,
        pruner={"type": "none"},
        storage=storage,
        tracking={"uri": tracking},
        launch={**launch, **options},
    )
    return load_spec(write_spec(project, name, spec))


def _launch(spec: SweepSpec, capsys) -> str:
    """`harness launch` (its CLI function); the job it recorded on the study."""
    assert main(["launch", spec.name]) == 0, capsys.readouterr().out
    return load_study(spec).user_attrs[LAUNCH_JOBS_ATTR][-1]["job_id"]


def _said(capsys) -> str:
    return " ".join(capsys.readouterr().out.split())


def _logs(spec: SweepSpec) -> str:
    return "\n".join(log.read_text(errors="replace") for log in sorted(_log_dir(spec).glob("*_log.out")))


def _log_dir(spec: SweepSpec) -> Path:
    return spec.state_dir / "launch" / spec.name


def _training(spec: SweepSpec, number: int) -> bool:
    log = TrialDir.of(spec, number).log
    return log.exists() and "Train config" in log.read_text(errors="replace")


def _runs(spec: SweepSpec) -> dict:
    client = open_mlflow(spec.tracking_uri)
    experiment = client.get_experiment_by_name(spec.experiment_name)
    return {r.data.tags["mlflow.runName"]: r for r in client.search_runs([experiment.experiment_id])}


def _assert_stopped_and_requeued(spec: SweepSpec) -> None:
    """The job's worker recorded its stop: trial 0 failed `terminated` and queued again, nothing left RUNNING."""
    first, retry, *rest = load_study(spec).get_trials()
    assert not rest
    assert first.state == TrialState.FAIL and TrialRecord.of(first).fail_reason == "terminated"
    assert TrialRecord.of(first).requeued and retry.state == TrialState.WAITING
    assert retry.system_attrs["fixed_params"] == first.params
    statuses = {name: run.info.status for name, run in _runs(spec).items()}
    assert statuses["trial-0000"] == "KILLED" and "RUNNING" not in statuses.values(), statuses
    assert "recorded trial-0000 (FAIL: terminated, re-queued)" in _logs(spec)


def _assert_resumed(spec: SweepSpec) -> None:
    """The re-queued trial trained to its end in a later job: same params, COMPLETE, its run FINISHED."""
    first, retry = load_study(spec).get_trials()
    assert retry.state == TrialState.COMPLETE and retry.params == first.params
    assert _runs(spec)["trial-0001"].info.status == "FINISHED"


@pytest.mark.extended  # two workers train and report: about 2 minutes here
def test_a_job_array_meets_the_budget(project, speech_data, slurm, storage, tracking, capsys):
    spec = _sweep(project, speech_data, "array", storage, tracking, budget={"trials": 2, "max_steps": 10}, workers=2)
    job = _launch(spec, capsys)
    said = _said(capsys)
    assert f"Submitted 2 worker job(s) for sweep array to partition {slurm.partition}, 1 CPUs and 0 GPUs each" in said
    (entry,) = load_study(spec).user_attrs[LAUNCH_JOBS_ATTR]
    assert entry["executor"] == "slurm" and entry["tasks"] == 2 and entry["log_dir"] == str(_log_dir(spec))
    assert datetime.fromisoformat(entry["submitted"]).utcoffset().total_seconds() == 0
    assert f"scancel {job}" in said and "#SBATCH --array=0-1%2" in (_log_dir(spec) / f"{job}_submission.sh").read_text()

    assert slurm.wait_ended(job, JOB_SECONDS) == ["COMPLETED", "COMPLETED"], _logs(spec)[-3000:]
    trials = load_study(spec).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= 2 and all(t.state == TrialState.COMPLETE for t in trials)  # each may start one past it
    runs = _runs(spec)
    (parent,) = [r for r in runs.values() if r.data.tags.get("harness.role") == "sweep"]
    for trial in complete:  # Optuna and MLflow agree, trial by trial
        run = runs[f"trial-{trial.number:04d}"]
        assert run.info.run_id == TrialRecord.of(trial).mlflow_run_id and run.info.status == "FINISHED"
        assert run.data.metrics["objective"] == pytest.approx(trial.value)
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert (report_dir(spec) / "report.md").is_file()
    logs = _logs(spec)
    assert logs.count("harness launch: this job runs") == 2 and "Traceback" not in logs


@pytest.mark.extended  # trains a trial twice over: about 2 minutes here
def test_scancel_in_mid_trial_is_recorded_and_a_second_launch_finishes(
    project, speech_data, slurm, storage, tracking, capsys
):
    spec = _sweep(project, speech_data, "cancel", storage, tracking, cpus_per_worker=None)
    job = _launch(spec, capsys)
    assert f"{slurm.cpus} CPUs (`launch.cpus_per_worker` unset)" in _said(capsys)  # not 8: it would pend for ever
    assert slurm.jobs(job)[0]["NumCPUs"] == str(slurm.cpus)
    wait_for(lambda: _training(spec, 0), JOB_SECONDS, "trial-0000 to train")
    slurm.run("scancel", job)
    assert slurm.wait_ended(job, 120) == ["CANCELLED"]
    _assert_stopped_and_requeued(spec)

    again = _launch(spec, capsys)
    assert slurm.wait_ended(again, JOB_SECONDS) == ["COMPLETED"], _logs(spec)[-3000:]
    _assert_resumed(spec)
    assert [e["job_id"] for e in load_study(spec).user_attrs[LAUNCH_JOBS_ATTR]] == [job, again]


@pytest.mark.extended  # waits for Slurm's time-limit warning, then trains the trial again: about 3 minutes here
def test_the_time_limit_warning_stops_the_worker_cleanly(project, speech_data, slurm, storage, tracking, capsys):
    spec = _sweep(
        project, speech_data, "limit", storage, tracking, budget={"max_steps": 200, "val_check_interval": 100}
    )
    job = _launch(spec, capsys)
    wait_for(lambda: _training(spec, 0), JOB_SECONDS, "trial-0000 to train")
    # A new limit: the warning (90 s before it, sent up to 30 s early) due at once, the end 70 s away or more.
    ran = _seconds(slurm.jobs(job)[0]["RunTime"])
    slurm.run("scontrol", "update", f"JobId={job}", f"TimeLimit={math.ceil((ran + 70) / 60)}")
    slurm.wait_ended(job, 180)
    logs = _logs(spec)
    assert f"the job's time limit is {STOP_WARNING_SECONDS} s away (SIGUSR2): stopping" in logs
    _assert_stopped_and_requeued(spec)

    again = _launch(spec, capsys)
    assert slurm.wait_ended(again, JOB_SECONDS) == ["COMPLETED"], _logs(spec)[-3000:]
    _assert_resumed(spec)


@pytest.mark.extended  # trains a trial twice over: about 2 minutes here
def test_a_requeued_job_resumes_the_study(project, speech_data, slurm, storage, tracking, capsys):
    """`scontrol requeue` is what preemption with PreemptMode=REQUEUE does: SIGTERM, then the job runs again."""
    spec = _sweep(project, speech_data, "preempt", storage, tracking)
    job = _launch(spec, capsys)
    assert "#SBATCH --requeue" in (_log_dir(spec) / f"{job}_submission.sh").read_text()
    wait_for(lambda: _training(spec, 0), JOB_SECONDS, "trial-0000 to train")
    slurm.run("scontrol", "requeue", job)
    wait_for(lambda: slurm.states(job) == ["PENDING"], 120, "the job to be pending again")
    _assert_stopped_and_requeued(spec)
    slurm.run("scontrol", "update", f"JobId={job}", "StartTime=now")  # Slurm holds a requeued job 2 minutes

    assert slurm.wait_ended(job, JOB_SECONDS) == ["COMPLETED"], _logs(spec)[-3000:]
    assert slurm.jobs(job)[0]["Restarts"] == "1"
    _assert_resumed(spec)
    assert _logs(spec).count("harness launch: this job runs") == 2  # one log, the job's two runs


@pytest.mark.parametrize(
    ("launch", "refusal"),
    [
        (
            {"cpus_per_worker": 64},
            "`launch.cpus_per_worker` is 64, but no node of Slurm partition harness has more than {cpus} CPUs",
        ),
        (
            {"gpus_per_worker": 1},
            "`launch.gpus_per_worker` is 1, but no node of Slurm partition harness has more than 0 GPUs",
        ),
        ({"mem_gb": 4096}, "`launch.mem_gb` is 4096, but no node of Slurm partition harness has more than {gb} GB"),
        (
            {"time_minutes": 240},
            "`launch.time_minutes` is 240, but Slurm partition harness allows at most {minutes} "
            "minutes per job (MaxTime)",
        ),
        ({"partition": "gpu"}, "`launch.partition` is 'gpu', which this cluster does not have: use one of harness"),
    ],
    ids=["cpus", "gpus", "memory", "time", "partition"],
)
def test_a_request_the_partition_cannot_satisfy_is_refused_before_sbatch(
    project, speech_data, slurm, capsys, launch, refusal
):
    spec = _sweep(project, speech_data, "toobig", NEVER, "http://mlflow-host:5000", **launch)
    assert main(["launch", spec.name]) == 2
    offers = {"cpus": slurm.cpus, "gb": slurm.memory_mb // 1024, "minutes": slurm.max_minutes}
    assert refusal.format(**offers) in _said(capsys)
    assert not slurm.run("squeue", "--noheader").strip() and not _log_dir(spec).exists()  # nothing submitted


def test_unset_cpus_per_worker_follow_the_partition(project, speech_data, slurm):
    """The default (8) would pend for ever on a 2-CPU node (reason PartitionConfig): a node's worth is asked instead
    (submitted: test_scancel_in_mid_trial_is_recorded_and_a_second_launch_finishes)."""
    spec = _sweep(project, speech_data, "default", NEVER, "http://mlflow-host:5000", cpus_per_worker=None)
    partition = read_partition(None)
    assert partition.name == slurm.partition and partition.max_minutes == slurm.max_minutes
    assert [(n.name, n.cpus, n.gpus, n.memory_mb) for n in partition.nodes] == [
        (slurm.node, slurm.cpus, 0, slurm.memory_mb)
    ]
    assert worker_cpus(spec, partition) == min(DEFAULT_CPUS_PER_WORKER, slurm.cpus)
    spec.launch.cpus_per_worker = 1
    assert worker_cpus(spec, partition) == 1  # a value set is kept (and refused if too big)


def test_cpus_and_gpus_must_fit_on_one_node(project, speech_data):
    """A partition of CPU nodes and small GPU nodes (none here to ask Slurm about): each request alone fits a
    node, together none."""
    cpu, gpu = Node("cpu01", 64, 256 * 1024, 0), Node("gpu01", 8, 512 * 1024, 4)
    partition = Partition("mixed", "UP", None, None, None, (cpu, gpu))
    spec = _sweep(
        project, speech_data, "mixed", NEVER, "http://mlflow-host:5000", gpus_per_worker=1, cpus_per_worker=None
    )
    assert worker_cpus(spec, partition) == 8  # the GPU node's CPUs: the CPU node has no GPU
    check_request(spec, partition, cpus=8)
    with pytest.raises(LaunchError, match=re.escape("No node of Slurm partition mixed has 16 CPUs, 1 GPUs together")):
        check_request(spec, partition, cpus=16)
    spec.launch.mem_gb = 600
    with pytest.raises(LaunchError, match=re.escape("`launch.mem_gb` is 600, but no node of Slurm partition mixed")):
        check_request(spec, partition, cpus=8)


def test_without_slurm_commands_launch_says_so_in_one_line(project, speech_data, capsys, monkeypatch, tmp_path):
    spec = _sweep(project, speech_data, "noslurm", NEVER, "http://mlflow-host:5000")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["launch", spec.name]) == 2
    out = capsys.readouterr().out
    assert out.startswith(
        "error: No `sbatch`, `srun`, `scontrol`, `sinfo` on this machine's PATH: run `harness launch` "
    )
    assert "Traceback" not in out


def test_a_controller_that_is_down_is_one_line(project, speech_data, slurm, capsys, monkeypatch):
    spec = _sweep(project, speech_data, "down", NEVER, "http://mlflow-host:5000")
    monkeypatch.setenv("SLURM_CONF", str(slurm.down_conf()))
    assert main(["launch", spec.name]) == 2
    said = _said(capsys)
    assert said.startswith("error: `scontrol show partition` failed: ")
    assert "Unable to contact slurm controller" in said and "Nothing was submitted." in said


# -- containers: what the job needs must be mounted at its own path (dry runs; no Slurm needed) ------------


def test_a_container_must_see_the_checkout_the_logs_and_the_data(project, speech_data, capsys, tmp_path_factory):
    tmp = tmp_path_factory.getbasetemp()
    image = {"container_image": "nvcr.io/nvidia/nemo:25.04"}
    spec = _sweep(
        project, speech_data, "boxed", NEVER, "http://mlflow-host:5000", **image, container_mounts=["/shared:/shared"]
    )
    assert main(["launch", spec.name, "--dry-run"]) == 2
    said = _said(capsys)
    assert f"would not see the checkout (the job `cd`s into it) {project}, `data.train` {speech_data['train']}" in said
    assert "`launch.container_mounts` (/shared:/shared) mounts none of them at the same path" in said
    assert f"Add {speech_data['train'].parent}:{speech_data['train'].parent}, {project}:{project} to" in said

    # Mounted elsewhere in the container: the job's paths would not be there.
    _sweep(project, speech_data, "boxed", NEVER, "http://mlflow-host:5000", **image, container_mounts=[f"{tmp}:/data"])
    assert main(["launch", spec.name, "--dry-run"]) == 2
    assert f"{project} (mounted at /data/{project.relative_to(tmp)}, not at its own path)" in _said(capsys)

    mounts = ["/shared:/shared", f"{tmp}:{tmp}:ro"]
    _sweep(
        project, speech_data, "boxed", NEVER, "http://mlflow-host:5000", **image, container_mounts=mounts, requeue=False
    )
    assert main(["launch", spec.name, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"--container-mounts=/shared:/shared,{tmp}:{tmp}:ro" in out and "#SBATCH --no-requeue" in out.splitlines()
    assert f"# each task runs `harness worker`, in Python: cd {project} && python -m harness worker" in out


def _seconds(clock: str) -> int:
    """Slurm's `RunTime` (`[days-]hh:mm:ss`) in seconds."""
    days, _, rest = clock.rpartition("-")
    hours, minutes, seconds = (int(p) for p in rest.split(":"))
    return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds
