"""Throwaway benchmark projects: demo-shaped data and specs in a temp dir, and supervisors built on them.

Only the standard library and `benchmarks.probe` are imported at module level; the harness, yaml and rich
are imported where used, so `--help` and the bare child process stay light.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, TypedDict

from benchmarks.probe import PROBE_ENV, SITECUSTOMIZE

REPO = Path(__file__).resolve().parent.parent
DEMO_DATA = REPO / "data" / "demo"
DEMO_SPEC = REPO / "sweeps" / "canary-tiny.yaml"
# The fixed point both sides train (clipped into the demo's search space): lr 1e-3 fine-tuned the twin
# on an unseen domain from 99.7% to 9.3% WER in 600 steps (docs/ARCHITECTURE.md, "The small twin").
PREFERRED_PARAMS: dict[str, Any] = {
    "lr": 1e-3,
    "batch_duration": 20,
    "freeze": "none",
    "use_loss_mask_for_prompt": True,
}
# The levers against forgetting (issue 22): the demo searches them, but a benchmark of anything else keeps its
# trials to the new domain alone, as before they came (`Project(levers=...)` keeps those it measures).
LEVERS = ("replay_fraction", "merge_alpha")
WORKER = "bench"  # a fixed worker name (trial ownership); sampler seeds follow the sweep seed and trial number


class BenchmarkMismatch(RuntimeError):
    """A benchmark's sweep ran something other than what its figures describe (more or fewer trained trials,
    other params or steps): raised instead of printing figures that would measure something else."""


def demo_search_space() -> Path:
    """The search space the demo sweep names (read each time: the demo's space may be re-tuned)."""
    import yaml

    return REPO / yaml.safe_load(DEMO_SPEC.read_text())["search_space"]


def fixed_params(space_path: Path) -> dict:
    """`PREFERRED_PARAMS`, each moved into the space: a categorical's middle choice, a range's nearest bound."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from harness.search_space import load_search_space

    params = {}
    for name, dist in load_search_space(space_path).items():
        want = PREFERRED_PARAMS.get(name)
        if isinstance(dist, CategoricalDistribution):
            params[name] = want if want in dist.choices else dist.choices[len(dist.choices) // 2]
        elif isinstance(dist, FloatDistribution | IntDistribution):
            want = (dist.low * dist.high) ** 0.5 if want is None else want
            params[name] = type(dist.low)(min(max(want, dist.low), dist.high))
        else:
            raise TypeError(f"{space_path}: {name} is a {type(dist).__name__}; fixed_params knows no value for it")
    return params


class Lines(TypedDict, total=False):
    """`Project`'s manifest cuts, as keywords."""

    train_lines: int | None
    validation_lines: int | None


def smoke_lines(args: argparse.Namespace) -> Lines:
    """`Project` manifest cuts: smoke runs train and validate on the first lines of the manifests only;
    `--validation-lines` cuts validation (autoregressive decoding of an early model is slow on a loaded CPU)."""
    if args.smoke:
        return {"train_lines": 16, "validation_lines": args.validation_lines or 8}
    return {"validation_lines": args.validation_lines}


class Project:
    """A throwaway project dir under /tmp as CWD (sweeps/, search_spaces/, mlruns/), so nothing lands in the
    repo's mlruns/. With `train_lines`/`validation_lines` the manifests are cut to their first lines. Its search
    space is the demo's without the `LEVERS` not named in `levers`."""

    def __init__(
        self,
        name: str,
        *,
        data: Path = DEMO_DATA,
        train_lines: int | None = None,
        validation_lines: int | None = None,
        keep: bool = False,
        levers: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.data = Path(data).resolve()
        self.lines = {"train": train_lines, "validation": validation_lines}
        self.keep = keep
        self.dropped = set(LEVERS) - set(levers)

    def __enter__(self) -> Project:
        self.root = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-", dir="/tmp"))
        self.saved_cwd, self.saved_env = os.getcwd(), dict(os.environ)
        for sub in ("sweeps", "search_spaces", "probe", "probes", "bare"):
            (self.root / sub).mkdir()
        self.search_space = self.root / "search_spaces" / demo_search_space().name
        self._copy_search_space()
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

    def _copy_search_space(self) -> None:
        import yaml

        space = yaml.safe_load(demo_search_space().read_text())
        if self.dropped & set(space):
            self.search_space.write_text(yaml.safe_dump({k: v for k, v in space.items() if k not in self.dropped}))
        else:  # as shipped, comments included
            shutil.copy(demo_search_space(), self.search_space)

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

    def spec(self, name: str, **overrides: Any) -> Any:
        """The demo sweep spec (sweeps/canary-tiny.yaml) on this project's data, sections merged with `overrides`
        (a `pruner` given replaces the demo's whole); no test manifest, retention sets (nor their limit), seed
        confirmation or registration (not what these benchmarks measure), unless `budget` gives a `confirm`; replay
        data and the levers' params in `start_from` only for the levers the project keeps."""
        import yaml

        from harness.spec import load_spec

        raw = self.demo
        raw["data"] = {**raw["data"], **{split: str(path) for split, path in self.manifests.items()}}
        raw["data"].pop("test", None)
        raw["data"].pop("retention", None)  # scoring what a fine-tune forgets is not what these measure
        (raw.get("objective") or {}).pop("retention_max_wer_increase", None)  # a limit needs the retention data
        if "replay_fraction" in self.dropped:
            raw["data"].pop("replay", None)  # the knob and the data come together
        entries = [{k: v for k, v in entry.items() if k not in self.dropped} for entry in raw.get("start_from") or []]
        raw["start_from"] = [entry for entry in entries if entry]
        raw["search_space"] = f"search_spaces/{self.search_space.name}"
        for key, value in overrides.items():
            merge = isinstance(value, dict) and key != "pruner"
            raw[key] = {**raw.get(key, {}), **value} if merge else value
        # Seed confirmation would train runs beyond the measured trials, and registration adds an MLflow model
        # at the end: neither is what these benchmarks measure (each pair must train exactly its one trial).
        confirm = overrides.get("budget", {}).get("confirm")
        raw["budget"].pop("confirm", None)
        if confirm:
            raw["budget"]["confirm"] = confirm
        raw.pop("registry", None)
        (self.root / "sweeps" / f"{name}.yaml").write_text(yaml.safe_dump(raw))
        return load_spec(name)

    @property
    def demo(self) -> dict[str, Any]:
        """The demo sweep spec as written (a fresh copy on each read)."""
        import yaml

        return yaml.safe_load(DEMO_SPEC.read_text())

    def child_env(self, workers: int = 1) -> dict[str, str]:
        """What every measured child process gets: the probe, and the thread count a single CPU slot gets."""
        path = [str(self.root / "probe"), str(REPO), os.environ.get("PYTHONPATH", "")]
        return {
            PROBE_ENV: str(self.root / "probes"),
            "PYTHONPATH": os.pathsep.join(p for p in path if p),
            "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // workers)),
        }

    def supervisor(self, spec, log_name: str, workers: int = 1, **options):
        """A Supervisor as `harness sweep --workers N` builds it (N CPU slots sharing the cores), with the probe in
        its trials' environment; `options` go to `Supervisor(...)` as they are."""
        from rich.console import Console

        from harness.sweep import Supervisor

        console = Console(file=(self.root / log_name).open("w"), width=200)
        return Supervisor(spec, console=console, worker=WORKER, slots=[self.child_env(workers)] * workers, **options)

    def probe(self, pid: int) -> dict:
        """The probe file a measured child process left at its exit."""
        path = self.root / "probes" / f"probe-{pid}.json"
        if not path.is_file():
            raise RuntimeError(f"process {pid} left no probe ({path}); was sitecustomize.py loaded?")
        return json.loads(path.read_text())
