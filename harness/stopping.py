"""Stop requests: Ctrl-C (SIGINT) and SIGTERM end a sweep the same way, with everything recorded.

SIGTERM is what Slurm's `scancel`, a preemption or systemd sends; by default it kills Python on
the spot, leaving trials RUNNING in Optuna and runs RUNNING in MLflow. Inside `stop_requests()` it
raises `Terminated`, a KeyboardInterrupt, so one handler records both kinds of stop: the
supervisor stops its trial processes, fails and re-queues their trials, ends every open run, and
raises `Stopped`, whose message says what it did; the CLI prints it and exits 130 or 143.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
from collections.abc import Iterator

INTERRUPTED, TERMINATED = "interrupted", "terminated"
EXIT_CODES = {INTERRUPTED: 130, TERMINATED: 143}  # 128 + SIGINT, 128 + SIGTERM, as a shell reports them


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread where Ctrl-C would raise KeyboardInterrupt."""


class Stopped(KeyboardInterrupt):
    """A stop the supervisor has recorded; `str()` says what was stopped and how to resume."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.reason]


def reason_of(stop: KeyboardInterrupt) -> str:
    """`terminated` for SIGTERM, `interrupted` for Ctrl-C (the trials' recorded fail reason)."""
    if isinstance(stop, Stopped):
        return stop.reason
    return TERMINATED if isinstance(stop, Terminated) else INTERRUPTED


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def stop_requests() -> Iterator[None]:
    """Within: SIGTERM raises `Terminated` (main thread only; signals cannot be handled elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM while a stop is being recorded: a second Ctrl-C must not cut the
    records short (a user tends to press it twice)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def die_with_parent() -> None:
    """Linux: this process gets SIGKILL when its parent dies, so no orphan keeps a GPU (a trial
    process under its supervisor, a DDP rank under the trial process that started it)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


# What a scheduler or torchrun sets for *its* ranks; a trial process starts its own (see training.py).
RANK_VARIABLES = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "NODE_RANK",
    "GROUP_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
)


def trial_rank() -> int:
    """This process's rank in its trial: Lightning starts ranks > 0 with LOCAL_RANK set; the supervisor
    clears inherited RANK_VARIABLES, so the trial process itself (rank 0) has none."""
    return int(os.environ.get("LOCAL_RANK", "0"))
