"""A disk that fills in the middle of a sweep: one sentence naming the store and the space left, no traceback,
and nothing recorded lost; what it leaves RUNNING, the next run repairs.

Real stores on a real full file system: `mlruns/` is a 3 MiB tmpfs (mounting needs root; the test skips
without it), filled with a file while a trial runs, as a disk fills under a long sweep.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from harness.cli import main
from harness.disk_space import disk_full
from harness.errors import StoreError
from harness.spec import load_spec
from harness.stores import OPTUNA_STORE, STORAGE_SETTING, full_store_text, reported
from harness.study import open_storage
from harness.sweep import Supervisor
from harness.sweep._outcomes import SUPERVISOR_DIED
from harness.tracking import Tracker
from harness.trial_dir import TrialDir
from harness.trial_record import TrialRecord
from tests.conftest import REPO, spec_dict, write_spec
from tests.helpers import load_study, wait_for

DISK_MIB = 3  # the stores' schemas (about 1.1 MiB) and a few trials' files fit; the filler takes the rest


@contextlib.contextmanager
def _tmpfs(folder: Path, mib: int) -> Iterator[Path]:
    """`folder` as a tmpfs of `mib` MiB while inside; skips the test where mounting is not permitted."""
    folder.mkdir()
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(folder)], capture_output=True, text=True
        )
    except FileNotFoundError:
        pytest.skip("a full disk needs a small tmpfs, and this machine has no `mount`")
    if mounted.returncode:
        pytest.skip(f"a full disk needs a small tmpfs, and mount refused ({mounted.stderr.strip()}): run as root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def small_disk(project):
    """`mlruns/` on a 3 MiB tmpfs."""
    with _tmpfs(project / "mlruns", DISK_MIB) as mlruns:
        yield mlruns


def _fill(folder: Path) -> Path:
    """Write zeros into `folder` until its file system refuses another byte."""
    filler = folder / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    return filler


def _trial_started(db: Path, number: int) -> bool:
    """Whether the supervisor has recorded trial `number`'s process: its last write before the trial ends."""
    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
            row = con.execute(
                "SELECT 1 FROM trial_user_attributes a JOIN trials t ON a.trial_id = t.trial_id "
                "WHERE t.number = ? AND a.key = 'trial_pid'",
                (number,),
            ).fetchone()
    except sqlite3.OperationalError:  # the schema is still being created
        return False
    return row is not None


def _runs(spec) -> dict[str, str]:
    """Every MLflow run of the sweep's experiment: name -> status."""
    tracker = Tracker(spec.tracking_uri, spec.experiment_name, create=False)
    return {r.info.run_name: r.info.status for r in tracker.client.search_runs([tracker.experiment_id])}


def test_a_disk_that_fills_mid_sweep_is_one_sentence_and_the_next_run_repairs_it(project, speech_data, small_disk):
    """Before: `sqlite3.OperationalError: database or disk is full` as a traceback, and the trial and its runs
    left RUNNING with nothing said. Trial 0 is recorded, the disk fills while trial 1 trains."""
    spec_file = spec_dict(
        speech_data,
        budget={"trials": 2, "max_steps": 10, "val_check_interval": 10},
        pruner={"type": "none"},
    )
    name = write_spec(project, "full", spec_file)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    sweep = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "sweep", name, "--workers", "1"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: _trial_started(small_disk / "optuna.db", 1), 120, "trial 1")
        filler = _fill(small_disk)
        out, err = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    text = " ".join(out.split())
    optuna_db = small_disk / "optuna.db"
    assert sweep.returncode == 2, out + err
    assert "Traceback" not in out + err, out + err
    assert len(re.findall(r"error:", out)) == 1, out
    assert re.search(
        rf"error: The (Optuna storage {optuna_db}|MLflow tracking store {small_disk / 'mlflow.db'}) is out of disk "
        rf"space \(\d+ bytes free of {DISK_MIB}\.0 MiB in {small_disk}\): free space there or move the store to a "
        r"bigger disk \(",
        text,
    ), text
    assert (
        "then run the same command: trial-0001 stays RUNNING in the study until then, and that run marks it FAIL "
        "(its MLflow run FAILED) and re-queues it with the same params; the sweep's MLflow parent run stays RUNNING "
        "until that run resumes it; every trial recorded before is kept."
    ) in text

    spec = load_spec(name)
    study = load_study(spec)
    before = {t.number: (t.state, t.value, t.params) for t in study.trials}
    assert before[0][0] == TrialState.COMPLETE and before[1][0] == TrialState.RUNNING
    assert _runs(spec) == {"full": "RUNNING", "trial-0000": "FINISHED", "trial-0001": "RUNNING"}  # MLflow refused

    # Space again; the next run (its budget met: no new trial) repairs what the full disk left.
    filler.unlink()
    spec.budget.trials = 1
    Supervisor(spec).run()
    after = load_study(spec).trials
    assert [t.state for t in after] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert (after[0].value, after[0].params) == before[0][1:]  # the recorded trial, unchanged
    record = TrialRecord.of(after[1])
    assert record.fail_reason == SUPERVISOR_DIED and record.requeued
    assert after[2].system_attrs["fixed_params"] == before[1][2] and TrialRecord.of(after[2]).retry_of == 1  # retry
    assert _runs(spec) == {"full": "FINISHED", "trial-0000": "FINISHED", "trial-0001": "FAILED"}
    assert json.loads(TrialDir.of(spec, 0).result().read_text())["state"] == "complete"


def test_a_full_store_is_named_with_the_space_left(tmp_path):
    """Optuna wraps SQLite's SQLITE_FULL in StorageInternalError: the store is named with what `shutil.disk_usage`
    says, and the message says how to free it; a fresh study on the full disk fails the same way when opened."""
    with _tmpfs(tmp_path / "disk", 1) as disk:
        url = f"sqlite:///{disk / 'optuna.db'}"
        study = optuna.create_study(study_name="s", storage=open_storage(url))
        study.enqueue_trial({"x": 1.0})  # the study works until the disk fills
        _fill(disk)
        with pytest.raises(optuna.exceptions.StorageInternalError) as caught:
            for _ in range(100):  # a write may still land in a free page of the file; the next does not
                study.ask()
        assert disk_full(caught.value)
        expected = (
            f"The {OPTUNA_STORE} {disk / 'optuna.db'} is out of disk space (0 bytes free of 1.0 MiB in {disk}): "
            f"free space there or move the store to a bigger disk ({STORAGE_SETTING})"
        )
        assert full_store_text(caught.value, storage_url=url, tracking_uri="http://127.0.0.1:1") == expected
        with pytest.raises(StoreError) as opened, reported(OPTUNA_STORE, url, STORAGE_SETTING):
            optuna.create_study(study_name="another", storage=url)
        assert str(opened.value) == f"{expected}, then run the same command."
    assert not disk_full(ValueError("a value"))


def test_a_full_disk_outside_the_stores_is_one_line(project, speech_data, small_disk, capsys):
    """Before any store exists the sweep writes its manifests under `mlruns/`: a full disk there is the file
    and its space left, exit 2, no traceback."""
    name = write_spec(project, "early", spec_dict(speech_data))
    _fill(small_disk)
    assert main(["sweep", name]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith(f"error: The disk under {small_disk}/") and "Traceback" not in out, out
    assert f"is full (0 bytes free of {DISK_MIB}.0 MiB in {small_disk}" in out
    assert out.endswith("free space there, then run the same command.")
