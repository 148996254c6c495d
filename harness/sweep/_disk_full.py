"""A full disk under the stores (or the trial dirs) in the middle of a sweep: stop, close what still takes a
write, and say in one sentence which store is full, how much space is left and what the next run repairs.

A store on a full disk can refuse every write or take some: SQLite still writes into free pages of its file,
so a short update may pass where the next insert fails. Recording a trial's end takes several writes (its
reason, its MLflow run, its state, its retry), and a sequence cut in the middle would leave a FAIL trial whose
retry was never queued, or an MLflow run nobody closes. So the study is not written at all here: the trials
this supervisor ran stay RUNNING, owned by a process that is gone once this one exits, which is the one state
the next run's start repairs whole (`_recovery.reconcile`: FAIL, MLflow run FAILED, re-queued with the same
params). MLflow runs are ended KILLED where MLflow still takes writes: each of those writes stands alone, and
the repair ends a trial's run FAILED again later.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time

import optuna
from optuna.trial import TrialState

from harness.errors import StoreError
from harness.names import run_name
from harness.spec import SweepSpec
from harness.stores import full_store_text
from harness.sweep._process import TrialProcess, stop_process
from harness.sweep._recovery import STALE_SECONDS
from harness.tracking import TRIAL_ROLE, Tracker
from harness.trial_record import TrialRecord

FAIL_REASON = "stopped: a disk of the sweep is full"


def record_full_disk(
    exc: BaseException,
    *,
    spec: SweepSpec,
    study: optuna.Study,
    tracker: Tracker,
    worker: str,
    running: list[TrialProcess],
    evaluation: tuple[subprocess.Popen, str, str] | None,
    parent_run: str | None,
) -> StoreError:
    """Stop the processes in flight, end their MLflow runs (and the parent) KILLED where MLflow takes it,
    leave the study untouched; the error to raise, naming the full store, its space left and the repair."""
    for process in running:
        stop_process(process.proc)
        process.log.close()
    if evaluation is not None:
        stop_process(evaluation[0])
    ours, unowned = _running_trials(study, worker)
    repaired = {r for r in ours.values() if r}  # the next run's start ends these FAILED
    others = {process.run_id for process in running} | _unrecorded_runs(tracker, parent_run, set(ours))
    if evaluation is not None:
        others.add(evaluation[1])
    stuck = sorted(run for run in (repaired | others) if not _ended(tracker, run))
    parent_stuck = parent_run is not None and not _ended(tracker, parent_run)
    head = full_store_text(exc, storage_url=spec.storage_url, tracking_uri=spec.tracking_uri)
    parts = [
        *_trials_text(sorted(ours), unowned),
        *(["the sweep's MLflow parent run stays RUNNING until that run resumes it"] if parent_stuck else []),
    ]
    unrepaired = [r for r in stuck if r not in repaired]
    if unrepaired:
        parts.append(f"MLflow runs {', '.join(unrepaired)} stay RUNNING (MLflow refused the write; no run ends them)")
    repair = "; ".join(parts) + "; every trial recorded before is kept" if parts else _NOTHING_LEFT
    return StoreError(f"{head}, then run the same command: {repair}.")


_NOTHING_LEFT = "no trial was in flight and every MLflow run is closed, so it resumes where this one stopped"


def _running_trials(study: optuna.Study, worker: str) -> tuple[dict[int, str | None], dict[int, float]]:
    """This supervisor's RUNNING trials (number -> MLflow run id, if recorded), and RUNNING trials with no owner
    recorded (number -> when the next run's start may repair them): a trial asked just before its owner's record
    failed is one. Reads, which a full disk allows."""
    ours: dict[int, str | None] = {}
    unowned: dict[int, float] = {}
    host, pid = socket.gethostname(), os.getpid()
    with contextlib.suppress(Exception):
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            record = TrialRecord.of(t)
            if record.worker == worker or (record.host, record.pid) == (host, pid):
                ours[t.number] = record.mlflow_run_id
            elif record.host is None:
                start = record.heartbeat or (t.datetime_start.timestamp() if t.datetime_start else time.time())
                unowned[t.number] = start + STALE_SECONDS
    return ours, unowned


def _trials_text(ours: list[int], unowned: dict[int, float]) -> list[str]:
    """The trials left RUNNING and exactly what the next run's start (`_recovery.reconcile`) does with them."""
    parts = []
    if ours:
        one = len(ours) == 1
        parts.append(
            f"{', '.join(run_name(n) for n in ours)} stay{'s' if one else ''} RUNNING in the study until then, "
            f"and that run marks {'it' if one else 'them'} FAIL (its MLflow run FAILED) and re-queues "
            f"{'it' if one else 'them'} with the same params"
        )
    for number, after in sorted(unowned.items()):
        parts.append(
            f"{run_name(number)} stays RUNNING with no owner recorded, and a run started after "
            f"{time.strftime('%H:%M:%S', time.localtime(after))} marks it FAIL and re-queues it"
        )
    return parts


def _unrecorded_runs(tracker: Tracker, parent_run: str | None, numbers: set[int]) -> set[str]:
    """RUNNING trial runs of those trials whose id never reached the study (the disk filled between the two)."""
    if parent_run is None or not numbers:
        return set()
    with contextlib.suppress(Exception):
        return {
            run.info.run_id
            for run in tracker.children(parent_run)
            if run.info.status == "RUNNING"
            and run.data.tags.get("harness.role") == TRIAL_ROLE
            and run.data.tags.get("optuna.trial_number") in {str(n) for n in numbers}
        }
    return set()


def _ended(tracker: Tracker, run_id: str) -> bool:
    """End one run KILLED with the reason; False where MLflow refuses the write (its disk is full too)."""
    try:
        if tracker.client.get_run(run_id).info.status == "RUNNING":
            tracker.set_tags(run_id, {"harness.fail_reason": FAIL_REASON})
            tracker.end_run(run_id, "KILLED")
    except Exception:  # noqa: BLE001 - any refusal leaves the run RUNNING, and the message says so
        return False
    return True
