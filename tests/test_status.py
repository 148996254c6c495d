"""`harness status`: every count, the best, the budget, the ETA and the launch jobs, read without a lock or a
write; and finding a sweep started from a YAML path by that path or by its name (`harness.sweep_lookup`).

The counts and the ETA are checked on studies built by hand in a real SQLite storage (trials as the supervisor
records them), the live view on a real sweep of canary-tiny running in a subprocess."""

from __future__ import annotations

import datetime
import hashlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.pruners import NopPruner
from optuna.trial import FrozenTrial, TrialState, create_trial
from rich.console import Console

from harness.cli import main
from harness.confirmation import budget_used
from harness.errors import SpecError
from harness.names import DECISION_ATTR, LAUNCH_JOBS_ATTR, SPEC_FILE_ATTR
from harness.search_space import load_search_space
from harness.spec import load_spec
from harness.status import read_status, status_view
from harness.status._pace import estimate_eta
from harness.status._view import watch_status
from harness.study import open_study
from harness.sweep_lookup import find_sweep
from tests.conftest import spec_dict
from tests.helpers import ctrl_c_default, wait_for

NOW = datetime.datetime(2026, 12, 5, 12, 0, 0)
PARAMS: dict[str, Any] = {"lr": 1e-3, "batch_duration": 10, "freeze": "none", "use_loss_mask_for_prompt": True}
FAKE_DATA = {"train": "t.json", "validation": "v.json"}  # reading a study never opens the manifests


def _write(project: Path, rel: str, spec: dict) -> str:
    import yaml

    path = project / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec))
    return rel


def _open(rel: str) -> tuple:
    """The spec at `rel` and its study, created as the supervisor creates it (definition, objective names)."""
    spec = load_spec(rel)
    return spec, open_study(spec, load_search_space(spec.search_space), pruner=NopPruner())


def _trial(
    state: TrialState,
    *,
    started: float | None = None,
    took: float | None = None,
    value: float | None = None,
    steps: dict[int, float] | None = None,
    constraint: tuple[str, float] | None = None,
    **attrs,
) -> FrozenTrial:
    """A trial as the supervisor leaves it: started `started` s before NOW, finished `took` s later."""
    space: dict[str, BaseDistribution] = {k: CategoricalDistribution([v]) for k, v in PARAMS.items()}
    trial = create_trial(
        state=state, params=PARAMS, distributions=space, value=value, user_attrs=attrs, intermediate_values=steps or {}
    )
    trial.datetime_start = NOW - datetime.timedelta(seconds=started) if started is not None else None
    finished = trial.datetime_start + datetime.timedelta(seconds=took or 0) if trial.datetime_start else None
    trial.datetime_complete = finished if state.is_finished() else None
    if constraint:
        trial.set_constraint(*constraint)
    return trial


def _text(status) -> str:
    out = io.StringIO()
    Console(file=out, width=200).print(status_view(status, where="here"))
    return out.getvalue()


@pytest.fixture
def mixed(project):
    """A sweep of every kind of trial: 12 search trials planned, 1 setting x 2 seeds to confirm."""
    rel = _write(
        project, "sweeps/mixed.yaml", spec_dict(FAKE_DATA, budget={"trials": 12, "confirm": {"top": 1, "seeds": 2}})
    )
    spec, study = _open(rel)
    for trial in (
        _trial(TrialState.COMPLETE, started=1000, took=100, value=0.30),
        _trial(TrialState.COMPLETE, started=900, took=100, value=0.10, constraint=("retention_wer_increase", 0.5)),
        _trial(TrialState.PRUNED, started=800, took=40, steps={10: 0.6}),
        _trial(TrialState.PRUNED, started=700, took=10, constraint=("out_of_memory", 1.0), fail_reason="oom"),
        _trial(TrialState.FAIL, started=650, took=10, fail_reason="oom"),  # an older harness's out of memory
        _trial(TrialState.FAIL, started=600, took=50, fail_reason="interrupted", requeued=True),
        _trial(TrialState.FAIL, started=500, took=20, fail_reason="RuntimeError: boom"),
        _trial(TrialState.RUNNING, started=30, steps={10: 0.5, 20: 0.42}, worker="node1:42"),
        _trial(TrialState.WAITING, retry_of=5, attempt=1),
        _trial(TrialState.COMPLETE, started=300, took=120, value=0.35, confirms=0),
        _trial(TrialState.RUNNING, started=10, confirms=0),
    ):
        study.add_trial(trial)
    return spec, study


def test_status_counts_every_kind_of_trial_and_the_confirmation_runs_apart(mixed):
    spec, study = mixed
    status = read_status(spec, study, now=NOW)
    assert dict(status.search) == {
        "complete": 2, "pruned": 1, "out of memory": 2, "failed": 2, "running": 1, "queued": 1
    }  # fmt: skip
    assert dict(status.confirmation) == {"complete": 1, "running": 1}
    assert (status.infeasible, status.requeued, status.used, status.budget) == (1, 1, 7, 12)
    assert status.best is not None and status.best.number == 0  # trial 1 is better but forgets too much
    text = _text(status)
    assert (
        "trials: 2 complete, 1 pruned, 1 running, 2 failed, 2 out of memory, 1 queued (1 complete but infeasible: "
        "forgets too much; 1 failed re-queued: not counted in the budget)"
    ) in text
    assert "confirmation runs of 2 planned: 1 complete, 1 running" in text
    assert "best so far: trial-0000 wer=0.3000  lr=0.001 batch_duration=10" in text
    assert "budget: 7/12 search trials used, 5 left" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith("trial-")}
    assert rows["trial-0007"] == ["trial-0007", "20/20", "0.4200", "node1:42", "30s"]
    assert rows["trial-0010"] == ["trial-0010", "(confirmation)", "-/20", "no", "validation", "yet", "?", "10s"]


def test_best_so_far_follows_the_seed_confirmation_decision(mixed):
    spec, study = mixed
    study.set_user_attr(DECISION_ATTR, {"model_trial": 9})
    status = read_status(spec, study, now=NOW)
    assert status.best is not None and status.best.number == 9
    assert "; decided" in _text(status)
    assert status.eta.left == 5  # the search's 5; no confirmation run is planned any more


def test_no_best_says_why(project):
    spec, study = _open(_write(project, "sweeps/none.yaml", spec_dict(FAKE_DATA)))
    study.add_trial(_trial(TrialState.RUNNING, started=5))
    assert "best so far: none (no trial has completed yet)" in _text(read_status(spec, study, now=NOW))


def test_a_pareto_sweeps_running_trials_say_they_report_no_steps(project):
    """Multi-objective trials are not pruned, so they report nothing to Optuna: no step is no news of a stall."""
    spec, study = _open(_write(project, "sweeps/front.yaml", spec_dict(FAKE_DATA, objective={"metric": "pareto"})))
    study.add_trial(_trial(TrialState.RUNNING, started=5))
    row = next(line for line in _text(read_status(spec, study, now=NOW)).splitlines() if line.startswith("trial-"))
    assert row.split()[1:] == ["-/20", "not", "reported", "(Pareto:", "no", "pruning)", "?", "5s"]


def _eta(search: list[FrozenTrial], budget: int, confirm_runs: int = 0):
    """The ETA of these search trials (no confirmation run yet) under `budget` search trials."""
    left = max(0, budget - budget_used(search))
    return estimate_eta(search, [], search_left=left, confirm_runs=confirm_runs, max_steps=200, now=NOW)


FOUR_DONE = [_trial(TrialState.COMPLETE, started=1000 - 100 * i, took=100, value=0.5) for i in range(4)]
TWO_RUNNING = [_trial(TrialState.RUNNING, started=30) for _ in range(2)]


def test_eta_deals_the_trials_left_to_the_slots_at_the_finished_trials_pace():
    eta = _eta(FOUR_DONE + TWO_RUNNING, budget=8)  # 2 to start; the running ones have 70 s to go
    assert (eta.seconds, eta.per_trial, eta.at_once, eta.left) == (170.0, 100.0, 2, 2)
    assert _eta(FOUR_DONE + TWO_RUNNING, budget=9).seconds == 270.0  # a third one waits for a free slot
    # Confirmation starts once the whole search has ended (170 s), both runs side by side at a complete trial's pace.
    assert _eta(FOUR_DONE + TWO_RUNNING, budget=8, confirm_runs=2).seconds == 270.0
    pruned = _trial(TrialState.PRUNED, started=400, took=20)
    assert _eta(FOUR_DONE + [pruned, *TWO_RUNNING], budget=9).per_trial == 84.0  # the mix is the pace


def test_eta_before_any_trial_finished_scales_a_running_trials_time_to_its_steps():
    running = _trial(TrialState.RUNNING, started=100, steps={50: 0.7})  # a quarter of 200 steps in 100 s
    eta = _eta([running], budget=1)
    assert (eta.per_trial, eta.seconds) == (400.0, 300.0)
    unknown = _eta([_trial(TrialState.RUNNING, started=100)], budget=1)
    assert unknown.seconds is None and unknown.why == "no trial has finished or reported a step yet"


def test_eta_says_when_nothing_runs_or_the_sweep_is_done():
    stalled = _eta(FOUR_DONE, budget=8)
    assert stalled.seconds is None and stalled.why.startswith("no trial is running")
    assert (_eta(FOUR_DONE, budget=4).seconds, _eta(FOUR_DONE, budget=4).why) == (0.0, "finished")


JOBS = [
    {"executor": "slurm", "job_id": "1001", "tasks": 2, "submitted": "2026-12-05T11:00", "log_dir": "mlruns/launch/a"},
    {"executor": "slurm", "job_id": "1002", "tasks": 1, "submitted": "2026-12-05T11:30", "log_dir": "mlruns/launch/b"},
]


def _fake_slurm(bin_dir: Path, calls: Path) -> None:
    """`squeue` knowing job 1001's two tasks, `sacct` the ended job 1002; each writes its arguments to `calls`."""
    bin_dir.mkdir()
    for name, output in (
        ("squeue", "1001_0|RUNNING|1:02|None\n1001_1|PENDING|0:00|Resources"),
        ("sacct", "1002|COMPLETED|00:05:00"),
    ):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> {calls}\nprintf "{output}\\n"\n')
        script.chmod(0o755)


def test_launch_jobs_are_shown_with_slurms_word_on_each_task(mixed, tmp_path, monkeypatch):
    """A stand-in for Slurm's two commands (the real scheduler is tests/test_launch's): what they are asked,
    and how their answers are read."""
    spec, study = mixed
    study.set_user_attr(LAUNCH_JOBS_ATTR, JOBS)
    calls = tmp_path / "calls"
    _fake_slurm(tmp_path / "bin", calls)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    text = _text(read_status(spec, study, now=NOW))
    assert "  slurm 1001: 2 task(s), submitted 2026-12-05T11:00, logs mlruns/launch/a" in text
    assert "    1001_0 RUNNING 1:02, 1001_1 PENDING (Resources)" in text
    assert "    1002 COMPLETED 00:05:00" in text
    asked = calls.read_text().splitlines()
    assert asked[0].startswith("squeue ") and "--jobs=1001,1002" in asked[0] and "--array" in asked[0]
    assert asked[1].startswith("sacct ") and "--jobs=1002" in asked[1]


def test_launch_jobs_without_slurm_commands_say_so_in_one_line(mixed, tmp_path, monkeypatch):
    spec, study = mixed
    study.set_user_attr(LAUNCH_JOBS_ATTR, [*JOBS, {"executor": "local", "job_id": "4242", "tasks": 1}])
    monkeypatch.setenv("PATH", str(tmp_path))  # neither squeue nor sacct
    lines = _text(read_status(spec, study, now=NOW)).splitlines()
    jobs = lines[lines.index("launch jobs:") :]
    assert [line for line in jobs if "squeue and sacct are not on this machine" in line] == [jobs[4]]
    assert jobs[3] == "  local 4242: 1 task(s)"
    assert "local jobs run on the machine that launched them" in jobs[5]


def test_watch_on_a_terminal_redraws_the_view_in_place(mixed):
    spec, study = mixed
    reads = []

    def read():
        reads.append(NOW)
        if len(reads) == 3:
            raise KeyboardInterrupt  # Ctrl-C during the third read
        return read_status(spec, study, now=NOW)

    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        watch_status(Console(file=out, force_terminal=True, width=200), read, where="here", seconds=0.01)
    drawn = out.getvalue()
    assert drawn.count("budget: 7/12") >= 2 and "\x1b[1A\x1b[2K" in drawn  # each drawn over the one before


WATCH = textwrap.dedent(
    """
    import sys
    from harness.cli import main
    code = main(["status", "mixed", "--watch", "--every", "0.3"])
    print("exit", code, sorted({"torch", "lightning", "nemo", "harness.pruners"} & set(sys.modules)))
    """
)


def test_watch_refreshes_without_a_lock_or_a_write_until_ctrl_c(mixed, project):
    """The sweep's SQLite creation lock held all along: status never waits for it, and the store's bytes stay
    as they were; Ctrl-C ends the watch with 130. Neither torch nor a pruner is loaded."""
    import fcntl

    db = project / "mlruns" / "optuna.db"
    before = (hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns)
    with (project / "mlruns" / "optuna.db.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        out = project / "watch.log"
        with out.open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-c", WATCH],
                cwd=project,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=ctrl_c_default,
            )
        try:
            wait_for(lambda: out.read_text().count("budget: 7/12") >= 2, 120, "two refreshes of the view")
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    said = out.read_text()
    assert proc.returncode == 0, said
    assert said.splitlines()[-1] == "exit 130 []"
    assert (hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns) == before


# -- finding a sweep by name or by path -------------------------------------------------------------------


def test_a_sweep_started_from_a_path_is_found_by_its_name_through_the_spec_its_study_recorded(project):
    rel = _write(project, "experiments/x.yaml", spec_dict(FAKE_DATA))
    spec, study = _open(rel)  # as the supervisor opens it: the spec's file recorded, relative to the project
    assert study.user_attrs[SPEC_FILE_ATTR] == rel
    assert find_sweep("x").source == rel
    assert find_sweep(rel).source == rel
    assert find_sweep("x", storage=spec.storage_url).storage_url == spec.storage_url


def test_a_spec_under_sweeps_wins_and_a_different_recorded_one_is_named(project, capsys):
    rel = _write(project, "experiments/x.yaml", spec_dict(FAKE_DATA))
    _open(rel)
    _write(project, "sweeps/x.yaml", spec_dict(FAKE_DATA))
    assert find_sweep("x").source == "sweeps/x.yaml"
    assert capsys.readouterr().err == (
        "warning: sweep 'x' last ran from experiments/x.yaml; reading it with sweeps/x.yaml "
        "(pass experiments/x.yaml to use that one).\n"
    )
    assert find_sweep(rel).source == rel and capsys.readouterr().err == ""


def test_a_sweep_that_cannot_be_found_names_what_was_looked_for(project):
    with pytest.raises(SpecError, match=r"No sweep 'x': no sweeps/x.yaml \(known sweeps: none\), and the Optuna "
                       r"storage .*mlruns/optuna.db does not exist\."):  # fmt: skip
        find_sweep("x")
    _write(project, "experiments/x.yaml", spec_dict(FAKE_DATA))
    (project / "mlruns").mkdir()
    study = optuna.create_study(study_name="x", storage=f"sqlite:///{project / 'mlruns' / 'optuna.db'}")
    with pytest.raises(SpecError, match="its study in .*optuna.db records no spec file"):
        find_sweep("x")  # a study from before specs were recorded
    study.set_user_attr(SPEC_FILE_ATTR, "moved/x.yaml")
    with pytest.raises(SpecError, match=r"Sweep 'x' ran from moved/x.yaml, which is not there"):
        find_sweep("x")
    with pytest.raises(SpecError, match=r"No sweep spec moved/x.yaml: check the path, or name the sweep \(`x`\)"):
        find_sweep("moved/x.yaml")
    assert main(["status", "y"]) == 2


# -- a real sweep, read while it runs ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_sweep(tmp_path_factory, speech_data):
    """`harness sweep experiments/live.yaml` (one trial of 30 steps, validated every 10, its checkpoint kept)
    running in its own process; stopped if a test leaves it running."""
    import yaml

    from tests.conftest import SEARCH_SPACE
    from tests.helpers import in_project

    project = tmp_path_factory.mktemp("live")
    (project / "search_spaces").mkdir()
    (project / "search_spaces" / "test.yaml").write_text(yaml.safe_dump(SEARCH_SPACE))
    spec = spec_dict(
        speech_data,
        budget={"trials": 1, "max_steps": 30, "val_check_interval": 10},
        pruner={"type": "none"},
        training={"keep_checkpoints": "best"},
    )
    with in_project(project):
        rel = _write(project, "experiments/live.yaml", spec)
        log = (project / "sweep.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness", "sweep", rel], cwd=project, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            yield project, proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=120)
            log.close()


def _status_text(capsys) -> str:
    assert main(["status", "live"]) == 0
    return capsys.readouterr().out


@pytest.mark.extended
def test_status_of_a_running_sweep_shows_its_trial_at_a_step_then_the_final_counts(live_sweep, capsys, monkeypatch):
    project, proc = live_sweep
    monkeypatch.chdir(project)

    def running_with_a_step() -> str | None:
        assert proc.poll() is None, (project / "sweep.log").read_text()
        text = _status_text(capsys) if (project / "mlruns" / "optuna.db").is_file() else ""
        rows = [line for line in text.splitlines() if line.startswith("trial-") and "no validation yet" not in line]
        return text if rows else None

    text = wait_for(running_with_a_step, 300, "a running trial with a validation step")
    row = next(line.split() for line in text.splitlines() if line.startswith("trial-0000"))
    step, figure = row[1].split("/"), float(row[2])
    assert int(step[0]) in (10, 20, 30) and step[1] == "30" and figure >= 0  # a validation inside the budget
    assert "trials: 1 running\n" in text and "budget: 1/1 search trials used, 0 left" in text, text
    assert proc.wait(timeout=600) == 0, (project / "sweep.log").read_text()
    final = _status_text(capsys)
    assert "trials: 1 complete\n" in final and "best so far: trial-0000 wer=" in final
    assert "budget: 1/1 search trials used, 0 left; finished" in final and "running" not in final


@pytest.mark.extended
def test_report_and_export_find_a_sweep_started_from_a_path_by_that_path_and_by_its_name(live_sweep, tmp_path):
    project, proc = live_sweep
    assert proc.wait(timeout=600) == 0, (project / "sweep.log").read_text()
    cwd = Path.cwd()
    os.chdir(project)
    try:
        assert main(["export", "live", "--out", str(tmp_path / "by-name.nemo")]) == 0
        assert main(["export", "experiments/live.yaml", "--out", str(tmp_path / "by-path.nemo")]) == 0
        assert main(["report", "live", "--no-html"]) == 0
    finally:
        os.chdir(cwd)
    assert (tmp_path / "by-name.nemo").read_bytes() == (tmp_path / "by-path.nemo").read_bytes()
    assert (project / "mlruns" / "reports" / "live" / "report.md").is_file()
    assert time.time() - (project / "mlruns" / "reports" / "live" / "report.md").stat().st_mtime < 600
