"""Shared benchmark plumbing: throwaway projects, the bare NeMo flow, and a probe that timestamps both.

Why a probe: the harness trial (`python -m harness.trial`) must be measured exactly as a sweep runs it,
without editing it. A generated `sitecustomize.py`, active only in child processes that get
`BENCH_PROBE_DIR`, hooks the first import of torch, Lightning and NeMo and records wall-clock stamps
(process start, imports, Trainer, restore, dataloaders, first training batch, end of training), training
audio seconds and peak RSS into `<dir>/probe-<pid>.json`. The harness trial and the bare flow are thus
instrumented identically, and the harness code under test runs unmodified.

Only the standard library is imported at module level: the probe loads this module in every child
process before anything else, and must not change what it measures.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import importlib.abc
import importlib.machinery
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEMO_DATA = REPO / "data" / "demo"
DEMO_SPEC = REPO / "sweeps" / "canary-tiny.yaml"
PROBE_ENV = "BENCH_PROBE_DIR"
SITECUSTOMIZE = f"import os\nif os.environ.get({PROBE_ENV!r}):\n    import benchmarks._common\n" \
    "    benchmarks._common.install_probe()\n"
# The fixed point both sides train (clipped into the demo's search space): lr 1e-3 fine-tuned the twin
# on an unseen domain from 99.7% to 9.3% WER in 600 steps (docs/ARCHITECTURE.md, "The small twin").
PREFERRED_PARAMS = {"lr": 1e-3, "batch_duration": 20, "freeze": "none", "use_loss_mask_for_prompt": True}
WORKER = "bench"  # a fixed worker name (trial ownership); sampler seeds follow the sweep seed and trial number


# -- the probe (runs inside child processes) ---------------------------------------------------------


class _Probe:
    """Stamps and counters of one child process, written to `probe-<pid>.json` at exit."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / f"probe-{os.getpid()}.json"
        self.stamps: dict[str, float] = {"spawned": _process_start_time(), "python": time.time()}
        self.counters: dict[str, float] = {"steps": 0, "audio_seconds": 0.0, "validations": 0,
                                           "validation_seconds": 0.0}
        self.metrics: dict[str, float] = {}

    def stamp(self, name: str) -> None:
        """Record the first time a point is reached (later repeats, e.g. re-validation, are not startup)."""
        self.stamps.setdefault(name, time.time())

    def write(self) -> None:
        self.stamp("exit")
        data = {"stamps": self.stamps, "counters": self.counters, "metrics": self.metrics,
                "peak_rss_mib": status_mib("VmHWM")}
        self.path.write_text(json.dumps(data, indent=1))


class _ImportHooks(importlib.abc.MetaPathFinder):
    """Run `before()` / `after(module)` around the first execution of chosen modules."""

    def __init__(self, hooks: dict[str, tuple[Callable[[], None] | None, Callable[[Any], None] | None]]) -> None:
        self.hooks = dict(hooks)

    def find_spec(self, name, path, target=None):
        if name not in self.hooks:
            return None
        before, after = self.hooks.pop(name)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        exec_module = spec.loader.exec_module

        def run(module) -> None:
            if before:
                before()
            exec_module(module)
            if after:
                after(module)

        spec.loader.exec_module = run
        return spec


def install_probe() -> None:
    """Called from the generated sitecustomize.py: stamp this process and hook its heavy imports."""
    probe = _Probe(Path(os.environ[PROBE_ENV]))
    atexit.register(probe.write)
    hooks = _ImportHooks({
        "torch": (lambda: probe.stamp("torch_start"), None),
        "lightning.pytorch": (None, lambda module: probe.stamp("lightning_done")),
        "lightning.pytorch.trainer.trainer": (None, lambda module: _patch_trainer(module.Trainer, probe)),
        "nemo": (lambda: probe.stamp("nemo_start"), None),
        "nemo.collections.asr.models": (None, lambda module: _patch_model(module.EncDecMultiTaskModel, probe)),
    })
    sys.meta_path.insert(0, hooks)


def _stamped(method: Callable, probe: _Probe, before: str | None, after: str | None) -> Callable:
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        if before:
            probe.stamp(before)
        out = method(*args, **kwargs)
        if after:
            probe.stamp(after)
        return out

    return wrapper


def _patch_model(cls, probe: _Probe) -> None:
    """Restore and dataloader setup, the two NeMo calls both flows make before `fit`."""
    cls.restore_from = classmethod(_stamped(cls.restore_from.__func__, probe, "restore_start", "restore_done"))
    cls.setup_training_data = _stamped(cls.setup_training_data, probe, None, "train_data_done")
    cls.setup_validation_data = _stamped(cls.setup_validation_data, probe, None, "val_data_done")


def _patch_trainer(trainer_cls, probe: _Probe) -> None:
    """Every Trainer gets a stamping callback: first batch, validations, end of training, audio seconds."""
    from lightning.pytorch.callbacks import Callback

    class Stamps(Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            probe.stamp("train_start")

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            probe.stamp("first_batch")
            probe.counters["steps"] += 1
            probe.counters["audio_seconds"] += float(batch.audio_lens.sum()) / pl_module.cfg.get("sample_rate", 16000)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            probe.stamp("first_step_done")

        def on_validation_start(self, trainer, pl_module) -> None:
            self.validation_started = time.time()

        def on_validation_end(self, trainer, pl_module) -> None:
            probe.counters["validations"] += 1
            probe.counters["validation_seconds"] += time.time() - self.validation_started

        def on_train_end(self, trainer, pl_module) -> None:
            probe.stamp("train_end")
            for key, value in trainer.callback_metrics.items():
                if key.startswith("val_"):
                    probe.metrics[key] = float(value)

    init = trainer_cls.__init__

    @functools.wraps(init)
    def patched_init(self, *args, **kwargs) -> None:
        probe.stamp("trainer_start")
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), Stamps()]
        init(self, *args, **kwargs)
        probe.stamp("trainer_done")

    trainer_cls.__init__ = patched_init


def _process_start_time() -> float:
    """Wall-clock time at which this process was forked (from /proc), so interpreter start-up is counted."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time, ticks since boot
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - (uptime - started)
    except (OSError, ValueError, IndexError):
        return time.time()


def status_mib(key: str, pid: int | str = "self") -> float:
    """VmRSS / VmHWM of a process in MiB (Linux /proc; psutil is not a dependency)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- the bare flow (runs in a child process) ---------------------------------------------------------


def bare_main(argv: Sequence[str] | None = None) -> int:
    """NeMo's `speech_to_text_aed.py` fine-tune reduced to its steps: Trainer, restore, data, fit.

    Deliberately independent of the harness (no harness import), so a harness regression cannot hide
    in its own baseline. Trainer settings equal the harness's: same steps, validation interval,
    precision, no logger, no checkpoints.
    """
    parser = argparse.ArgumentParser()
    for name, kind in (("config", str), ("nemo", str), ("max_steps", int), ("val_check_interval", int),
                       ("seed", int), ("accelerator", str), ("precision", str)):
        parser.add_argument(name, type=kind)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from lightning.pytorch import Trainer, seed_everything
    from omegaconf import OmegaConf

    seed_everything(args.seed, workers=True)
    cfg = OmegaConf.load(args.config)
    trainer = Trainer(
        accelerator=args.accelerator, devices=1, precision=args.precision, max_steps=args.max_steps,
        val_check_interval=args.val_check_interval, check_val_every_n_epoch=None, num_sanity_val_steps=0,
        log_every_n_steps=args.max_steps + 1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, use_distributed_sampler=False,
    )
    from nemo.collections.asr.models import EncDecMultiTaskModel

    model = EncDecMultiTaskModel.restore_from(args.nemo, override_config_path=cfg, trainer=trainer,
                                              map_location="cpu")
    model.setup_training_data(model.cfg.train_ds)
    model.setup_validation_data(model.cfg.validation_ds)
    trainer.fit(model)
    return 0


# -- measured runs -----------------------------------------------------------------------------------


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


def demo_search_space() -> Path:
    """The search space the demo sweep names (read each time: the demo's space may be re-tuned)."""
    import yaml

    return REPO / yaml.safe_load(DEMO_SPEC.read_text())["search_space"]


def fixed_params(space_path: Path) -> dict:
    """`PREFERRED_PARAMS`, each moved into the space: a categorical's middle choice, a range's nearest bound."""
    from harness.search_space import load_search_space

    params = {}
    for name, dist in load_search_space(space_path).items():
        want = PREFERRED_PARAMS.get(name)
        if hasattr(dist, "choices"):
            params[name] = want if want in dist.choices else dist.choices[len(dist.choices) // 2]
        else:
            want = (dist.low * dist.high) ** 0.5 if want is None else want
            params[name] = type(dist.low)(min(max(want, dist.low), dist.high))
    return params


class Project:
    """A throwaway project dir under /tmp as CWD (sweeps/, search_spaces/, mlruns/), so nothing lands in the
    repo's mlruns/. With `train_lines`/`validation_lines` the manifests are cut to their first lines."""

    def __init__(self, name: str, *, data: Path = DEMO_DATA, train_lines: int | None = None,
                 validation_lines: int | None = None, keep: bool = False) -> None:
        self.name = name
        self.data = Path(data).resolve()
        self.lines = {"train": train_lines, "validation": validation_lines}
        self.keep = keep

    def __enter__(self) -> Project:
        self.root = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-", dir="/tmp"))
        self.saved_cwd, self.saved_env = os.getcwd(), dict(os.environ)
        for sub in ("sweeps", "search_spaces", "probe", "probes", "bare"):
            (self.root / sub).mkdir()
        self.search_space = self.root / "search_spaces" / demo_search_space().name
        shutil.copy(demo_search_space(), self.search_space)
        (self.root / "probe" / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.manifests = {split: self._manifest(split) for split in ("train", "validation")}
        os.chdir(self.root)
        for key in ("HARNESS_STORAGE", "HARNESS_TRACKING_URI", PROBE_ENV):
            os.environ.pop(key, None)
        return self

    def __exit__(self, *exc) -> None:
        os.chdir(self.saved_cwd)
        os.environ.clear()
        os.environ.update(self.saved_env)
        if self.keep:
            print(f"(kept {self.root})")
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def _manifest(self, split: str) -> Path:
        source = self.data / f"{split}.json"
        if not source.is_file():
            raise SystemExit(f"{source} is missing: run `.venv/bin/harness demo-data` or pass --data DIR.")
        if self.lines[split] is None:
            return source
        lines = source.read_text().splitlines()[: self.lines[split]]
        target = self.root / f"{split}.json"
        target.write_text("\n".join(lines) + "\n")
        return target

    def spec(self, name: str, **overrides: dict) -> Any:
        """The demo sweep spec (sweeps/canary-tiny.yaml) on this project's data, sections merged with `overrides`;
        no test manifest (scoring the best trial is not what these benchmarks measure)."""
        import yaml

        from harness.spec import load_spec

        raw = yaml.safe_load(DEMO_SPEC.read_text())
        raw["data"] = {**raw["data"], **{split: str(path) for split, path in self.manifests.items()}}
        raw["data"].pop("test", None)
        raw["search_space"] = f"search_spaces/{self.search_space.name}"
        for key, value in overrides.items():
            raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
        (self.root / "sweeps" / f"{name}.yaml").write_text(yaml.safe_dump(raw))
        return load_spec(name)

    def child_env(self) -> dict[str, str]:
        """What every measured child process gets: the probe, and the thread count a single CPU slot gets."""
        path = [str(self.root / "probe"), str(REPO), os.environ.get("PYTHONPATH", "")]
        return {PROBE_ENV: str(self.root / "probes"), "PYTHONPATH": os.pathsep.join(p for p in path if p),
                "OMP_NUM_THREADS": str(os.cpu_count() or 1)}

    def supervisor(self, spec, log_name: str):
        """A Supervisor as `harness sweep` builds it (one slot), with the probe in its trials' environment."""
        from rich.console import Console

        from harness.sweep import Supervisor

        console = Console(file=(self.root / log_name).open("w"), width=200)
        return Supervisor(spec, console=console, worker=WORKER, slots=[self.child_env()])

    def probe(self, pid: int) -> dict:
        path = self.root / "probes" / f"probe-{pid}.json"
        if not path.is_file():
            raise RuntimeError(f"process {pid} left no probe ({path}); was sitecustomize.py loaded?")
        return json.loads(path.read_text())


class SideBySide:
    """A harness trial and the bare flow on one config (`trial_config` output), seed, step budget and
    validation interval, run alternately. The n-th harness trial and the n-th bare run share a seed."""

    def __init__(self, project: Project, *, max_steps: int, val_check_interval: int, repetitions: int,
                 params: dict | None = None) -> None:
        self.project = project
        self.params = dict(params or fixed_params(project.search_space))
        # A median pruner that never decides (startup longer than the run): its reporting cost is measured.
        spec = project.spec(
            "side-by-side",
            budget={"trials": 1, "max_steps": max_steps, "val_check_interval": val_check_interval,
                    "baseline": False, "max_retries": 0},
            pruner={"type": "median", "n_startup_trials": repetitions + 1, "n_warmup_steps": 0},
        )
        self.supervisor = project.supervisor(spec, "supervisor.log")
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
        from harness.training import resolve_precision

        spec, sup = self.spec, self.supervisor
        seed = spec.training.seed * 100_003 + index  # the supervisor's per-trial seed
        cfg = trial_config(sup.info.config, self.params, data=sup.data, training=spec.training, budget=spec.budget,
                           seed=seed, custom_tokens=spec.custom_tokens)  # the manifests the trial reads
        work = self.project.root / "bare" / f"run-{index}"
        work.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, work / "config.yaml")
        command = [sys.executable, "-c", "from benchmarks._common import bare_main; raise SystemExit(bare_main())",
                   str(work / "config.yaml"), str(sup.nemo), str(spec.budget.max_steps),
                   str(min(spec.budget.val_check_interval, spec.budget.max_steps)), str(seed),
                   spec.training.accelerator, resolve_precision(spec.training)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.project.child_env()}
        with (work / "bare.log").open("w") as log:
            started = time.time()
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            code = proc.wait()
            finished = time.time()
        if code != 0:
            raise RuntimeError(f"bare flow exited {code}: {_tail(work / 'bare.log')}")
        return Run("bare", started, finished, self.project.probe(proc.pid))

    def alternate(self, repetitions: int) -> list[tuple[Run, Run]]:
        """a b a b ...: slow drifts of machine load hit both sides alike."""
        print(f"  both sides train: {self.params} on {self.project.manifests['train']}", flush=True)
        pairs = []
        for index in range(repetitions):
            harness = self.harness()
            bare = self.bare(index)
            pairs.append((harness, bare))
            print(f"  pair {index + 1}/{repetitions}: harness {harness.total:.1f} s, bare {bare.total:.1f} s "
                  f"(load {load()})", flush=True)
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
        sbs = SideBySide(project, max_steps=args.steps, val_check_interval=args.val_check_interval,
                         repetitions=args.repetitions)
        pairs = sbs.alternate(args.repetitions)
    if args.smoke:
        _SMOKE_PAIRS[key] = pairs
    return pairs


def smoke_lines(args: argparse.Namespace) -> dict[str, int | None]:
    """Smoke runs train and validate on the first lines of the manifests only; `--validation-lines` cuts
    validation (autoregressive decoding of an early model is slow on a loaded CPU)."""
    if args.smoke:
        return {"train_lines": 16, "validation_lines": args.validation_lines or 8}
    return {"validation_lines": args.validation_lines}


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else "(no log)"


# -- command line and output -------------------------------------------------------------------------


def parse_args(description: str, argv: Sequence[str] | None, *, full: dict[str, int], smoke: dict[str, int],
               switches: dict[str, str] | None = None) -> argparse.Namespace:
    """`--smoke` (tiny, for the test suite), `--data`, `--keep`, each size knob with its full/smoke default, and
    the benchmark's own on/off `switches` ({name: help})."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="a tiny run that checks the benchmark works (not speed)")
    parser.add_argument("--data", type=Path, default=DEMO_DATA, help="dir with train.json and validation.json")
    parser.add_argument("--keep", action="store_true", help="keep the temporary project dir under /tmp")
    parser.add_argument("--validation-lines", type=int, default=None,
                        help="validate on the first N lines of validation.json only (default: all; smoke: 8)")
    for key, text in (switches or {}).items():
        parser.add_argument("--" + key.replace("_", "-"), action="store_true", help=text)
    for key, value in full.items():
        parser.add_argument("--" + key.replace("_", "-"), type=type(value), default=None,
                            help=f"default {value} (smoke: {smoke[key]})")
    args = parser.parse_args(argv)
    for key in full:
        if getattr(args, key) is None:
            setattr(args, key, (smoke if args.smoke else full)[key])
    return args


def load() -> str:
    """The 1/5/15-minute load average: every figure is read against it (2 cores, shared machine)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def header(title: str, args: argparse.Namespace) -> None:
    sizes = " ".join(f"{k}={v}" for k, v in vars(args).items() if k not in ("data", "keep"))
    print(f"== {title} ({sizes})")
    print(f"machine: {os.cpu_count()} CPU cores, load at start {load()}", flush=True)


def table(rows: Sequence[Sequence[Any]], headings: Sequence[str]) -> None:
    """A plain fixed-width table (no rich: output goes to logs and RESULTS.md)."""
    cells = [[str(c) for c in headings]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headings))]
    for n, row in enumerate(cells):
        padded = (c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        print("  " + "  ".join(padded))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def _cell(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def median(values: Iterator[float] | Sequence[float]) -> float:
    return statistics.median(list(values))


@dataclass
class Verdict:
    """One figure against its target."""

    name: str
    value: float
    target: str
    met: bool
    unit: str = ""


def conclude(*verdicts: Verdict) -> int:
    """The last lines: load at the end, then each ratio and whether its target is met."""
    print(f"load at end {load()}")
    for v in verdicts:
        print(f"RESULT {v.name} = {v.value:.3f}{v.unit} (target {v.target}): {'met' if v.met else 'NOT met'}",
              flush=True)
    return 0
