"""Stores and records: nothing a user types or a cluster sends corrupts a sweep.

A recreated, unreachable or garbage store stops `harness sweep` (exit 2) with one message that
names the store and the fix, in seconds, and creates nothing; fresh SQLite stores open in many
processes at once. Real SQLite files, the machine's PostgreSQL and loopback ports; no training.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from harness.cli import main
from harness.definition import study_uid
from harness.search_space import load_search_space
from harness.spec import SweepSpec, load_spec
from harness.sweep_stores import open_sweep_stores
from harness.tracking import UID_TAG
from tests.conftest import spec_dict, write_spec
from tests.helpers import free_port, mlflow_server

NETWORK_LIMIT_S = 15


def _spec(project: Path, name: str, **overrides) -> SweepSpec:
    """A sweep over manifests that need not exist: every check here stops before preflight reads them."""
    data = {"train": project / "train.json", "validation": project / "validation.json"}
    return load_spec(write_spec(project, name, spec_dict(data, **overrides)))


def _open(spec: SweepSpec):
    """The stores as a supervisor opens them, before its first trial."""
    return open_sweep_stores(spec, load_search_space(spec.search_space), params={"model": spec.model}, tags={})


def _sweep_fails(capsys, *args: str) -> str:
    """`harness <args>` exits 2 with one error, no traceback; its text, as one line."""
    assert main(list(args)) == 2
    out = capsys.readouterr().out
    assert out.startswith("error:") and "Traceback" not in out, out
    return " ".join(out.split())


# -- recreated stores are reported, not merged ---------------------------------------------------


def test_a_deleted_mlflow_db_stops_the_resumed_sweep(project, capsys):
    """A resumed sweep whose MLflow parent run is gone stops, naming both stores; it opens no new parent run."""
    spec = _spec(project, "lost")
    parent = _open(spec).parent_run
    (spec.state_dir / "mlflow.db").unlink()

    out = _sweep_fails(capsys, "sweep", "lost")
    assert f"its Optuna study in {spec.state_dir / 'optuna.db'}" in out
    assert f"MLflow parent run {parent}, which experiment 'lost' in {spec.state_dir / 'mlflow.db'} does not have" in out
    assert "Restore that MLflow store" in out and "new sweep under a new name" in out
    assert not (spec.state_dir / "mlflow.db").exists()  # nothing was created in its place

    # Pointing the sweep at another experiment is the same break, and reported the same way.
    write_spec(project, "lost", spec_dict({"train": "t", "validation": "v"}, tracking={"experiment": "elsewhere"}))
    assert "which experiment 'elsewhere'" in _sweep_fails(capsys, "sweep", "lost")


def test_a_deleted_optuna_db_does_not_take_over_the_old_parent_run(project, capsys):
    """A recreated study gets a new uid, so the old parent run never collects its trials."""
    spec = _spec(project, "fresh")
    first = _open(spec)
    assert _open(spec).parent_run == first.parent_run  # a resume finds its parent run by the study's uid
    tags = MlflowClient(spec.tracking_uri).get_run(first.parent_run).data.tags
    assert tags[UID_TAG] == study_uid(first.study)
    (spec.state_dir / "optuna.db").unlink()

    out = _sweep_fails(capsys, "sweep", "fresh")
    assert f"experiment 'fresh' in {spec.state_dir / 'mlflow.db'} holds the parent run {first.parent_run}" in out
    assert f"the Optuna storage {spec.state_dir / 'optuna.db'} has no study of that name" in out
    assert "set `tracking.experiment` in sweeps/fresh.yaml to a new experiment" in out
    assert not (spec.state_dir / "optuna.db").exists()

    # The fix the message names: a new experiment gets a new study with its own uid and parent run.
    spec.tracking.experiment = "fresh-again"
    again = _open(spec)
    assert again.parent_run != first.parent_run and study_uid(again.study) != study_uid(first.study)


# -- fresh SQLite stores, many processes at once -------------------------------------------------

OPEN_AT_ONCE = """
import sys, time
from pathlib import Path
from harness.study import open_storage
from harness.tracking import Tracker
root, me = Path(sys.argv[1]), sys.argv[2]
(root / f"ready-{me}").touch()
while not (root / "go").exists():  # every process has imported everything: start together
    time.sleep(0.001)
Tracker(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}", "race")
open_storage(f"sqlite:///{root / 'mlruns' / 'optuna.db'}")
"""


def test_fresh_sqlite_stores_open_in_many_processes_at_once(tmp_path):
    """Fresh SQLite stores are created under a lock: every process opens them, none races on the schema."""
    count = 4
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AT_ONCE, str(tmp_path), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        )
        for i in range(count)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    (tmp_path / "go").touch()
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    failed = [out.strip().splitlines()[-1] for proc, out in zip(procs, outputs, strict=True) if proc.returncode]
    assert not failed, failed


# -- one message instead of a traceback ----------------------------------------------------------


def test_unreachable_network_stores_fail_in_seconds_with_one_message(project, capsys):
    """An unreachable PostgreSQL store or tracking server is reported in one line within seconds."""
    port = free_port()  # nothing listens on it
    _spec(project, "net")
    cases = [
        (
            ["--storage", f"postgresql://postgres:secret@127.0.0.1:{port}/optuna"],
            f"Cannot connect to the Optuna storage postgresql://***@127.0.0.1:{port}/optuna",
        ),
        (
            ["--storage", "postgresql://postgres@127.0.0.1:5432/harness_no_such_db"],
            'database "harness_no_such_db" does not exist',
        ),
        (
            ["--tracking-uri", f"http://127.0.0.1:{port}"],
            f"Cannot reach the MLflow tracking server http://127.0.0.1:{port}",
        ),
    ]
    for option, message in cases:
        started = time.monotonic()
        out = _sweep_fails(capsys, "worker", "net", *option)
        assert time.monotonic() - started < NETWORK_LIMIT_S
        assert message in out and "secret" not in out
        assert "--storage" in out or "--tracking-uri" in out  # where to fix it
    assert not (project / "mlruns").exists()


def test_a_tracking_server_that_refuses_the_host_name_says_allowed_hosts(project, capsys, tmp_path):
    """MLflow 3 answers 403 "Invalid Host header" to a host name it was not started with (its guard against
    DNS rebinding); 127.0.0.2 stands for `mlflow-host`. The worker stops at once, naming the flag."""
    _spec(project, "hosts")
    with mlflow_server(tmp_path / "server", host="127.0.0.2") as tracking:
        out = _sweep_fails(capsys, "worker", "hosts", "--tracking-uri", tracking)
    host = tracking.removeprefix("http://")
    assert f"The MLflow tracking server {tracking} refused the host name '{host}'" in out
    assert f'--allowed-hosts "{host},localhost:*"' in out and "--tracking-uri" in out
    assert not (project / "mlruns").exists()


def test_garbage_databases_and_a_mlruns_file_are_named(project, capsys):
    spec = _spec(project, "junk")
    spec.state_dir.mkdir()
    garbage = os.urandom(4096)
    for name in ("optuna.db", "mlflow.db"):
        (spec.state_dir / name).write_bytes(garbage)
        out = _sweep_fails(capsys, "sweep", "junk")
        assert f"{spec.state_dir / name} is not an SQLite database" in out
        assert "restore it from a backup" in out
        assert (spec.state_dir / name).read_bytes() == garbage  # left as it was
        (spec.state_dir / name).unlink()

    spec.state_dir.rmdir()
    spec.state_dir.write_text("not a directory")
    out = _sweep_fails(capsys, "sweep", "junk")
    assert f"{spec.state_dir} is a file" in out and "move the file away" in out


def test_report_on_a_sweep_that_never_ran_creates_nothing(project, capsys):
    """`harness report` on a sweep that never ran says the study is missing and creates no store."""
    _spec(project, "never")
    out = _sweep_fails(capsys, "report", "never")
    assert "Sweep 'never' has no study yet" in out
    assert f"its Optuna storage {project / 'mlruns' / 'optuna.db'} does not exist" in out
    assert "run `harness sweep never` first" in out
    assert not (project / "mlruns").exists()
