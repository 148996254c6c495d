"""Recovery of trials whose supervisor died: they stay RUNNING in Optuna until someone looks.

On start, a supervisor fails and re-queues every RUNNING trial whose owner is gone: a dead pid on
this host, or no heartbeat for `STALE_SECONDS` from another host (no way to look there).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable

from optuna.trial import FrozenTrial, TrialState

from harness.names import run_name
from harness.sweep._outcomes import SUPERVISOR_DIED, OutcomeWriter
from harness.sweep._process import alive
from harness.trial_record import TrialRecord

HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 600.0  # a RUNNING trial on another host with no heartbeat for this long is dead


def owner_alive(trial: FrozenTrial) -> bool:
    """Whether the supervisor of a RUNNING trial lives: its pid on this host, else a heartbeat within
    `STALE_SECONDS` (a trial just asked by another worker has no owner attrs yet: its start is its heartbeat)."""
    record = TrialRecord.of(trial)
    if record.host == socket.gethostname():
        return alive(record.pid)
    beat = record.heartbeat or (trial.datetime_start.timestamp() if trial.datetime_start else time.time())
    return time.time() - beat <= STALE_SECONDS


def reconcile(recorder: OutcomeWriter, log: Callable[[str], None]) -> list[int]:
    """Fail and re-queue RUNNING trials whose supervisor is gone; returns their numbers."""
    dead = []
    for t in recorder.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if owner_alive(t):
            continue
        record = TrialRecord.of(t)
        here = record.host == socket.gethostname()
        if here and record.trial_pid is not None and alive(record.trial_pid):
            os.kill(record.trial_pid, signal.SIGKILL)  # an orphan still training
        attempt = recorder.next_attempt(record.attempt)
        recorder.fail(t, record.mlflow_run_id, SUPERVISOR_DIED, next_attempt=attempt, trial_dir=None)
        log(f"[yellow]{run_name(t.number)} was left RUNNING by a dead supervisor: FAIL, re-queued[/]")
        dead.append(t.number)
    return dead
