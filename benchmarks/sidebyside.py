"""Harness trial vs bare NeMo flow, side by side: one config, seed, step budget and validation interval,
run alternately in a fresh project, each run timed by the probe (`benchmarks.probe`).

Each pair's harness side is a sweep of exactly one trial on the demo spec, and the benchmark checks after
each pair that the sweep trained that one setting once, as many steps as the bare side: a sweep feature
that runs more or less than that (a `start_from` entry, a repeat answered from an earlier trial) fails the
benchmark instead of changing what it measures."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.bare import bare_command
from benchmarks.cli import load
from benchmarks.project import BenchmarkMismatch, Project, fixed_params, smoke_lines


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
    validation interval, run alternately. Each pair's harness side is a sweep of its own (`spec`), checked
    after it ran to have trained exactly that one setting once (`one_trained_trial`, `expect_steps`), and the
    bare side trains the seed and config that trial got."""

    def __init__(
        self, project: Project, *, max_steps: int, val_check_interval: int, params: dict | None = None
    ) -> None:
        self.project = project
        self.params = dict(params or fixed_params(project.search_space))
        self.max_steps = max_steps
        self.val_check_interval = val_check_interval

    def spec(self, index: int) -> Any:
        """Pair `index`'s sweep: the demo spec as shipped, made to run exactly the bare side's setting, once.

        The demo's `start_from` entry would train before the benchmark's params (twice the steps on the harness
        side), and a later pair's params in the same study would be a repeat, answered from the first pair's
        result with nothing trained (`harness.sweep._repeats`). So each pair gets a study of its own (its own
        spec name) whose only `start_from` entry is the benchmark's params and whose budget is one trial.
        Pair `index` trains with training seed `index`, so the pairs see different data orders."""
        return self.project.spec(
            f"side-by-side-{index + 1}",
            start_from=[self.params],
            budget={
                "trials": 1,
                "max_steps": self.max_steps,
                "val_check_interval": self.val_check_interval,
                "baseline": False,
                "max_retries": 0,
            },
            # The median pruner never decides in a study of one trial (no complete trial to compare with):
            # its reporting cost is measured, never a pruned trial.
            pruner={"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
            training={"seed": index},
        )

    def pair(self, index: int) -> tuple[Run, Run]:
        """Pair `index`: the harness trial, then the bare flow on the seed and config that trial trained."""
        from harness.trial_dir import TrialDir

        sup = self.project.supervisor(self.spec(index), f"supervisor-{index + 1}.log").open()
        harness, trial = self.harness(sup)
        bare = self.bare(sup, trial, TrialDir.of(sup.spec, trial.number).config)
        return harness, bare

    def harness(self, sup) -> tuple[Run, Any]:
        """One trial through `Supervisor.run()`: ask, MLflow child run, config surgery, process, record.

        The supervisor is opened before the clock starts: a sweep opens its records once, not per trial."""
        from harness.trial_dir import TrialDir
        from harness.trial_record import TrialRecord

        started = time.time()
        sup.run()
        finished = time.time()
        trial = one_trained_trial(sup.study, self.params)
        trial_dir = TrialDir.of(sup.spec, trial.number)
        if trial.state.name != "COMPLETE":
            raise RuntimeError(f"harness trial {trial.number} ended {trial.state.name}: {_tail(trial_dir.log)}")
        result = json.loads(trial_dir.result().read_text())
        record = TrialRecord.of(trial)
        run = Run("harness", started, finished, self.project.probe(int(record.trial_pid or 0)), result)
        expect_steps("harness", self.max_steps, recorded=record.steps, result_json=result.get("steps"), probe=run.steps)
        return run, trial

    def bare(self, sup, trial, harness_config: Path) -> Run:
        """The bare flow in a fresh process, with the params and seed the harness trial got, on the config
        `trial_config` gives for them, checked to be the very file the harness trial trained on."""
        from omegaconf import OmegaConf

        from harness.canary import trial_config
        from harness.training import resolve_precision
        from harness.trial_record import TrialRecord

        spec = sup.spec
        seed = TrialRecord.of(trial).seed
        if seed is None:
            raise BenchmarkMismatch(f"trial {trial.number} recorded no training seed: the bare side cannot match it")
        cfg = trial_config(
            sup.info.config,
            dict(trial.params),
            data=sup.data,  # the manifests the trial reads
            training=spec.training,
            budget=spec.budget,
            seed=seed,
            behaviours=spec.behaviours,
        )
        work = self.project.root / "bare" / spec.name
        work.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, work / "config.yaml")
        same_config(work / "config.yaml", harness_config)
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
        run = self._launch(command, work / "bare.log")
        expect_steps("bare", self.max_steps, probe=run.steps)
        return run

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
        print(
            f"  both sides train: {self.params}, {self.max_steps} steps, on {self.project.manifests['train']}; "
            f"the harness side: one trial per pair in a study of its own "
            f"(the demo's start_from {self.project.demo.get('start_from')} replaced by these params)",
            flush=True,
        )
        pairs = []
        for index in range(repetitions):
            harness, bare = self.pair(index)
            pairs.append((harness, bare))
            print(pair_line(index, repetitions, harness, bare) + f" (load {load()})", flush=True)
        return pairs


def pair_line(index: int, repetitions: int, harness: Run, bare: Run) -> str:
    """What pair `index` measured: both sides' wall time, and the steps each trained (checked equal)."""
    return (
        f"  pair {index + 1}/{repetitions}: harness {harness.total:.1f} s, bare {bare.total:.1f} s, "
        f"{harness.steps} steps each, one trial trained"
    )


def one_trained_trial(study, params: dict) -> Any:
    """The study's only trial, checked to have run `params` in a process of its own.

    A side-by-side pair compares one training run with one: a sweep feature that runs anything else (another
    queued trial, a repeat answered from an earlier result, other params) would make the figures measure
    something else, so it fails the benchmark instead."""
    from harness.trial_record import TrialRecord

    trials = study.get_trials(deepcopy=False)
    seen = "; ".join(
        f"trial {t.number} {t.state.name} {t.params} repeat_of={TrialRecord.of(t).repeat_of}" for t in trials
    )
    if len(trials) != 1:
        raise BenchmarkMismatch(f"the harness side's sweep ran {len(trials)} trials, not the 1 measured: {seen}")
    trial = trials[0]
    record = TrialRecord.of(trial)
    if record.repeat_of is not None or record.trial_pid is None:
        raise BenchmarkMismatch(f"the harness side's trial was answered without training a process: {seen}")
    if trial.params != params:
        raise BenchmarkMismatch(f"the harness side trained {trial.params}, the bare side trains {params}")
    return trial


def expect_steps(side: str, max_steps: int, **counted: int | None) -> None:
    """Every count of `side`'s training steps (the trial's record, its result.json, the probe) is `max_steps`."""
    wrong = {name: steps for name, steps in counted.items() if steps != max_steps}
    if wrong:
        raise BenchmarkMismatch(f"the {side} side trained other than {max_steps} steps: {wrong}")


def same_config(bare: Path, harness: Path) -> None:
    """The bare side's NeMo config is byte for byte the one the harness trial trained on."""
    if bare.read_text() != harness.read_text():
        diff = difflib.unified_diff(
            harness.read_text().splitlines(), bare.read_text().splitlines(), "harness", "bare", lineterm="", n=0
        )
        raise BenchmarkMismatch(
            f"the bare side's config differs from the harness trial's {harness}:\n" + "\n".join(list(diff)[:40])
        )


_SMOKE_PAIRS: dict[tuple, list[tuple[Run, Run]]] = {}


def side_by_side(name: str, args: argparse.Namespace) -> list[tuple[Run, Run]]:
    """Alternate `args.repetitions` harness trials with bare runs of `args.steps` steps in a fresh project.

    Smoke runs in one process (the test suite) share the measured pairs when their sizes match: each trial
    process costs ~15 s of imports alone, and the smoke tests check the figures, not the speed.
    """
    key = (str(args.data), args.steps, args.val_check_interval, args.repetitions, args.validation_lines)
    if args.smoke and key in _SMOKE_PAIRS:
        print("  (smoke: reusing the pairs measured by another smoke benchmark in this process)")
        for index, (harness, bare) in enumerate(_SMOKE_PAIRS[key]):
            print(pair_line(index, args.repetitions, harness, bare))
        return _SMOKE_PAIRS[key]
    with Project(name, data=args.data, keep=args.keep, **smoke_lines(args)) as project:
        sbs = SideBySide(project, max_steps=args.steps, val_check_interval=args.val_check_interval)
        pairs = sbs.alternate(args.repetitions)
    if args.smoke:
        _SMOKE_PAIRS[key] = pairs
    return pairs


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else "(no log)"
