"""Launching and watching one trial process (`python -m harness.trial <dir>`), and stopping it.

A process per trial frees all GPU memory on exit and turns a crash into one failed trial. The
launcher writes what the process needs (the trial's resolved config and its job file) and starts
it on a slot; the helpers below read how it ended.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import optuna
from omegaconf import OmegaConf

from harness import search_space
from harness.canary import CheckpointInfo, trial_config
from harness.numerics import Numerics, recreate_env
from harness.provenance import AUDIO_HASHES_FILE
from harness.replay import replay_fraction
from harness.spec import DataSpec, SweepSpec
from harness.stopping import RANK_VARIABLES, die_with_parent
from harness.tokenizers import extract_tokenizers
from harness.tracking import Tracker
from harness.trial import EXIT_OOM, PRETRAINED_MODES, TEST_MODES, Job, Result
from harness.trial_dir import TrialDir
from harness.trial_manifests import trial_data
from harness.trial_record import OOM

LOG_TAIL_LINES = 200
STOP_GRACE_SECONDS = 10.0  # a trial process gets this long to exit on SIGTERM (Slurm's KillWait is 30 s)


@dataclass
class TrialProcess:
    """A trial's process in flight, with what the supervisor needs to record it when it ends."""

    trial: optuna.Trial
    proc: subprocess.Popen
    trial_dir: TrialDir
    run_id: str
    attempt: int
    slot: int
    log: IO
    started: float = field(default_factory=time.monotonic)
    beat: float = 0.0


@dataclass
class Launcher:
    """Writes a process's config and job file and starts it on a slot."""

    spec: SweepSpec
    info: CheckpointInfo
    nemo: Path
    data: DataSpec  # the manifests trials read: the user's, or their prompted copies
    tracker: Tracker
    slots: list[dict[str, str]]

    def start(
        self,
        trial_dir: TrialDir,
        params: dict,
        *,
        run_id: str,
        seed: int,
        max_steps: int,
        slot: int,
        trial_id: int | None = None,
        number: int | None = None,
        mode: str = "train",
        nemo: Path | None = None,
        confirm: bool = False,
        recreate: Numerics | None = None,
        merge_alphas: Sequence[float] | None = None,
    ) -> tuple[subprocess.Popen, IO]:
        """Write the config and job, and start `python -m harness.trial` on `slot` (`confirm`: a seed-confirmation
        run, never pruned, its checkpoint saved; `recreate`: a recorded trial's numerics, whose threads a
        reproduction runs with; `merge_alphas`: the merges it judges after training, by default the search
        space's for a training run, `harness.merging`)."""
        if merge_alphas is None:
            merge_alphas = search_space.merge_alphas(self.spec.search_space) if mode == "train" else ()
        trial_dir.path.mkdir(parents=True, exist_ok=True)
        for stale in (trial_dir.progress, *(trial_dir.result(rank) for rank in range(self.spec.training.devices))):
            stale.unlink(missing_ok=True)
        self._write_config(trial_dir, params, run_id=run_id, seed=seed, mode=mode)
        self.tracker.log_manifests(run_id, self._manifests(mode, params), self.spec.state_dir / AUDIO_HASHES_FILE)
        Job(
            spec=self.spec.source,
            nemo=str(nemo or self.nemo),
            freeze=str(params.get("freeze", "none")),
            seed=seed,
            run_id=run_id,
            max_steps=max_steps,
            trial_id=trial_id,
            number=number,
            mode=mode,
            confirm=confirm,
            save_model=trial_id is not None and self.spec.training.keep_checkpoints != "none",
            storage=self.spec.storage_url,
            tracking_uri=self.spec.tracking_uri,
            threads=None if recreate is None else recreate.threads,
            merge_alphas=list(merge_alphas),
        ).write(trial_dir)
        log = trial_dir.log.open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness.trial", str(trial_dir.path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(slot, recreate),
            preexec_fn=die_with_parent,
        )
        return proc, log

    def env(self, slot: int, recreate: Numerics | None = None) -> dict[str, str]:
        """A process's environment on `slot`: the supervisor's (no rank variables), the slot's, and with
        `recreate` the recorded trial's thread variables."""
        env = {k: v for k, v in os.environ.items() if k not in RANK_VARIABLES}
        env |= {"PYTHONUNBUFFERED": "1", **self.slots[slot % len(self.slots)]}
        for key, value in (recreate_env(recreate) if recreate is not None else {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def _write_config(self, trial_dir: TrialDir, params: dict, *, run_id: str, seed: int, mode: str) -> None:
        """The trial's resolved NeMo config, also an artifact of its run. The zero-shot baseline reads
        the user's manifests, without behaviour tokens the pretrained model never learnt."""
        baseline = mode in PRETRAINED_MODES
        cfg = trial_config(
            self.info.config,
            params,
            data=self._data(mode),
            training=self.spec.training,
            budget=self.spec.budget,
            seed=seed,
            behaviours=None if baseline else self.spec.behaviours,
        )
        if self.spec.training.tokenizers == "extract":
            extract_tokenizers(self.nemo, cfg, trial_dir.tokenizers)
        OmegaConf.save(cfg, trial_dir.config)
        if mode not in TEST_MODES:  # a test run scores a finished run's model: its config artifact stays the run's
            self.tracker.log_artifact(run_id, trial_dir.config, "config")

    def _data(self, mode: str) -> DataSpec:
        """The baseline reads the plain copies (no behaviour tokens); training and the test set the trials' set."""
        return trial_data(self.spec, baseline=True) if mode in PRETRAINED_MODES else self.data

    def _manifests(self, mode: str, params: dict) -> dict[str, str | list[str] | None]:
        """The manifests the process reads, by MLflow dataset context (its run's Dataset column): the user's
        where the copy differs only by its line numbers (the same content hash), so the UI shows their names.
        A trial blending replay also reads `data.replay` (in its own order: the same content, another hash)."""
        data = self.data if self.spec.behaviours and mode not in PRETRAINED_MODES else self.spec.data
        if mode in TEST_MODES:
            return {"test": data.test}
        read: dict[str, str | list[str] | None] = {} if mode == "baseline" else {"training": data.train}
        read |= {"replay": data.replay} if mode != "baseline" and replay_fraction(params) > 0 else {}
        return read | {"validation": data.validation, "retention": data.retention}


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it has not exited within the grace period."""
    proc.terminate()
    try:
        proc.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_alive(worker: str) -> bool:
    """Workers are `host:pid`; one on another host is assumed alive (no way to look)."""
    host, _, pid = worker.rpartition(":")
    return host != socket.gethostname() or (pid.isdigit() and alive(int(pid)))


def trial_result(trial_dir: TrialDir, code: int, devices: int) -> Result:
    """How a trial process ended, decided from every rank's result file and rank 0's exit code.

    When one DDP rank fails, Lightning SIGKILLs rank 0 (`_ChildProcessObserver`), which may first fail in
    the collective the dead rank left: rank 0's exit code and result then tell of the death, not its cause.
    So rank 0's complete or pruned result stands; otherwise an OOM on any rank makes the trial an OOM (an
    infeasible size, not a crash to retry), else the earliest failure written is the cause. Rank 0's own
    failure under a signal is the signal (killed while writing it); no failure written is the exit code."""
    results = _rank_results(trial_dir, devices)
    if 0 in results and results[0].state != "fail":
        return results[0]
    failures = [(rank, result) for rank, result in results.items() if result.state == "fail"]
    oom = next((result for _, result in failures if result.reason == OOM), None)
    if oom is not None:
        return oom
    if not failures or (failures[0][0] == 0 and code < 0):
        return Result(state="fail", reason=exit_reason(code))
    return failures[0][1]


def _rank_results(trial_dir: TrialDir, devices: int) -> dict[int, Result]:
    """rank -> its result, oldest written first, for the ranks that wrote a readable one (a process killed
    while writing leaves a torn file: nothing to read)."""
    written = []
    for rank in range(devices):
        try:
            result = Result.read(trial_dir, rank)
            if result is not None:
                written.append((trial_dir.result(rank).stat().st_mtime_ns, rank, result))
        except (OSError, ValueError):
            continue
    return {rank: result for _, rank, result in sorted(written, key=lambda w: w[:2])}


def exit_reason(code: int) -> str:
    """Why a trial process died without writing its result (kill -9, segfault, ...)."""
    if code == EXIT_OOM:
        return OOM
    if code < 0:
        return "killed" if -code == signal.SIGKILL else f"killed by {signal.Signals(-code).name}"
    return f"error: exit code {code}"


def write_tail(trial_dir: TrialDir) -> Path:
    """The last lines of a trial's log, for its FAILED run."""
    log, tail = trial_dir.log, trial_dir.log_tail
    lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:] if log.exists() else []
    tail.write_text("\n".join(lines) + "\n")
    return tail
