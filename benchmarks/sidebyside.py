"""Harness trial vs bare NeMo flow, side by side: one config, seed, step budget and validation interval,
run alternately in a fresh project, each run timed by the probe (`benchmarks.probe`)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.bare import bare_command
from benchmarks.cli import load
from benchmarks.project import Project, fixed_params, smoke_lines


@dataclass
class Run:
    """One measured process (a harness trial or the bare flow); all stamps on the same wall clock."""

    kind: str  # "harness" | "bare"
    started: float  # harness: the supervisor is asked for a trial; bare: the process is launched
    finished: float  # harness: the outcome is recorded in Optuna and MLflow; bare: the process is reaped
    probe: dict
    result: dict = field(default_factory=dict)  # harness: the trial's result.json

    def at(self, stamp: str) -> float:
        """Seconds from `started` to a probe stamp (`started` itself is 0)."""
        return 0.0 if stamp == "started" else self.probe["stamps"][stamp] - self.started

    @property
    def total(self) -> float:
        return self.finished - self.started

    @property
    def steps(self) -> int:
        return int(self.probe["counters"]["steps"])

    @property
    def training(self) -> float:
        """First training batch to the end of training: the part that scales with steps (validations included)."""
        return self.at("train_end") - self.at("first_batch")

    @property
    def fixed(self) -> float:
        """Everything that does not scale with steps: start-up, restore, final evaluation, logging, exit."""
        return self.total - self.training

    @property
    def per_step(self) -> float:
        return self.training / max(1, self.steps)

    @property
    def audio_seconds(self) -> float:
        return float(self.probe["counters"]["audio_seconds"])

    @property
    def loop_seconds(self) -> float:
        """Training loop without validations: data loading plus forward/backward/step."""
        return self.training - float(self.probe["counters"]["validation_seconds"])


class SideBySide:
    """A harness trial and the bare flow on one config (`trial_config` output), seed, step budget and
    validation interval, run alternately. The n-th harness trial and the n-th bare run share a seed."""

    def __init__(
        self, project: Project, *, max_steps: int, val_check_interval: int, repetitions: int, params: dict | None = None
    ) -> None:
        self.project = project
        self.params = dict(params or fixed_params(project.search_space))
        # A median pruner that never decides (startup longer than the run): its reporting cost is measured.
        spec = project.spec(
            "side-by-side",
            budget={
                "trials": 1,
                "max_steps": max_steps,
                "val_check_interval": val_check_interval,
                "baseline": False,
                "max_retries": 0,
            },
            pruner={"type": "median", "n_startup_trials": repetitions + 1, "n_warmup_steps": 0},
        )
        self.supervisor = project.supervisor(spec, "supervisor.log").open()
        self.spec = spec

    def harness(self) -> Run:
        """One trial through `Supervisor.run()`: ask, MLflow child run, config surgery, process, record."""
        from harness.tracking import run_name
        from harness.trial_record import TrialRecord

        sup = self.supervisor
        number = len(sup.study.get_trials(deepcopy=False))
        sup.study.enqueue_trial(self.params)
        sup.spec.budget.trials = number + 1
        started = time.time()
        sup.run()
        finished = time.time()
        trial = sup.study.get_trials(deepcopy=False)[number]
        trial_dir = sup.spec.trials_dir / run_name(number)
        if trial.state.name != "COMPLETE":
            raise RuntimeError(f"harness trial {number} ended {trial.state.name}: {_tail(trial_dir / 'trial.log')}")
        result = json.loads((trial_dir / "result.json").read_text())
        return Run("harness", started, finished, self.project.probe(TrialRecord.of(trial).trial_pid), result)

    def bare(self, index: int) -> Run:
        """The bare flow in a fresh process, with the config and seed the harness's `index`-th trial got."""
        from omegaconf import OmegaConf

        from harness.canary import trial_config
        from harness.study import training_seed
        from harness.training import resolve_precision

        spec, sup = self.spec, self.supervisor
        seed = training_seed(spec.training.seed, index)
        cfg = trial_config(
            sup.info.config,
            self.params,
            data=sup.data,  # the manifests the trial reads
            training=spec.training,
            budget=spec.budget,
            seed=seed,
            custom_tokens=spec.custom_tokens,
        )
        work = self.project.root / "bare" / f"run-{index}"
        work.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, work / "config.yaml")
        budget = spec.budget
        command = bare_command(
            work / "config.yaml",
            sup.nemo,
            budget.max_steps,
            min(budget.val_check_interval, budget.max_steps),
            seed,
            spec.training.accelerator,
            resolve_precision(spec.training),
        )
        return self._launch(command, work / "bare.log")

    def _launch(self, command: list[str], log_path: Path) -> Run:
        """Run the bare flow's process to its end, timed from launch to reaping."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.project.child_env()}
        with log_path.open("w") as log:
            started = time.time()
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            code = proc.wait()
            finished = time.time()
        if code != 0:
            raise RuntimeError(f"bare flow exited {code}: {_tail(log_path)}")
        return Run("bare", started, finished, self.project.probe(proc.pid))

    def alternate(self, repetitions: int) -> list[tuple[Run, Run]]:
        """a b a b ...: slow drifts of machine load hit both sides alike."""
        print(f"  both sides train: {self.params} on {self.project.manifests['train']}", flush=True)
        pairs = []
        for index in range(repetitions):
            harness = self.harness()
            bare = self.bare(index)
            pairs.append((harness, bare))
            print(
                f"  pair {index + 1}/{repetitions}: harness {harness.total:.1f} s, bare {bare.total:.1f} s "
                f"(load {load()})",
                flush=True,
            )
        return pairs


_SMOKE_PAIRS: dict[tuple, list[tuple[Run, Run]]] = {}


def side_by_side(name: str, args: argparse.Namespace) -> list[tuple[Run, Run]]:
    """Alternate `args.repetitions` harness trials with bare runs of `args.steps` steps in a fresh project.

    Smoke runs in one process (the test suite) share one measured pair when their sizes match: each trial
    process costs ~15 s of imports alone, and the smoke tests check the figures, not the speed.
    """
    key = (str(args.data), args.steps, args.val_check_interval, args.repetitions, args.validation_lines)
    if args.smoke and key in _SMOKE_PAIRS:
        print("  (smoke: reusing the pair measured by another smoke benchmark in this process)")
        return _SMOKE_PAIRS[key]
    with Project(name, data=args.data, keep=args.keep, **smoke_lines(args)) as project:
        sbs = SideBySide(
            project, max_steps=args.steps, val_check_interval=args.val_check_interval, repetitions=args.repetitions
        )
        pairs = sbs.alternate(args.repetitions)
    if args.smoke:
        _SMOKE_PAIRS[key] = pairs
    return pairs


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else "(no log)"
