"""Sweep specs: `sweeps/<name>.yaml`, validated into typed dataclasses.

Every key is checked against the dataclass that owns it, so a typo (`max_step`) or a wrong type
(`trials: six`) is an error naming the file and the dotted key instead of a silently ignored
setting in a sweep that runs for days. Values that load with the right type but would stop or break
every trial (numbers out of range, an unknown accelerator, a behaviour name MLflow refuses in metric
names) are refused on load too (`check_values`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from harness.directions import Direction, objective_directions
from harness.errors import SpecError

SWEEPS_DIR = Path("sweeps")
STATE_DIR = Path("mlruns")
ENV_STORAGE = "HARNESS_STORAGE"
ENV_TRACKING_URI = "HARNESS_TRACKING_URI"
ONE_OR_LIST = "one_or_list"  # field metadata: a list field that also takes one item as is


@dataclass
class DataSpec:
    """The user's NeMo manifests and which fields hold the target text and language.

    `retention`: manifests of what the model must keep doing (its old domain), scored after every
    complete trial and on the baseline (`harness.retention`); one path or a list."""

    train: str
    validation: str
    test: str | None = None
    retention: list[str] = field(default_factory=list, metadata={ONE_OR_LIST: True})
    text_field: str = "text"
    lang_field: str = "target_lang"


@dataclass
class BudgetSpec:
    """How much compute the sweep may spend: trials in total and steps per trial."""

    trials: int = 6
    max_steps: int = 200
    val_check_interval: int = 50
    timeout_minutes: float | None = None
    warmup_fraction: float = 0.1
    max_retries: int = 1
    baseline: bool = True  # evaluate the pretrained model once, so every trial is read against it


@dataclass
class ObjectiveSpec:
    """What Optuna optimises: WER as written (minimise), `wer_normalized` (WER after Whisper's English
    normaliser with OpenAI's spelling table for English, then lower-casing and stripping punctuation;
    minimise), BLEU (maximise), `wer - bleu_weight * bleu`, or `pareto`: WER and BLEU at once (a
    multi-objective study; its trials are not pruned)."""

    metric: Literal["wer", "wer_normalized", "bleu", "mix", "pareto"] = "wer"
    bleu_weight: float = 1.0
    # A complete trial whose retention WER exceeds the baseline's by more than this (0.05 = 5 WER points)
    # is infeasible: never the best, and TPE steers away (`harness.retention`).
    retention_max_wer_increase: float | None = None

    @property
    def meaning(self) -> str:
        """What the decision was made on, in words for the report."""
        wer = "WER on the text as written (case and punctuation count)"
        return {
            "wer": wer,
            "wer_normalized": (
                "normalised WER (English through Whisper's normaliser and spelling table; lower-cased, "
                "punctuation stripped)"
            ),
            "bleu": "corpus BLEU (sacreBLEU, 13a)",
            "mix": f"{wer} minus {self.bleu_weight:g} x corpus BLEU",
            "pareto": f"{wer} and corpus BLEU together (Pareto front)",
        }[self.metric]


@dataclass
class PrunerSpec:
    """Which trials stop early, judged at each validation (harness.pruners). `median`, `compare: latest` judges
    the value just reported (a WER that climbs is pruned), `best` the best so far; `successive_halving` and
    `hyperband` keep the best 1/`reduction_factor` per rung. Null: the type's default; `n_warmup_steps`'s is
    each trial's learning-rate warm-up. Keys of another type are refused (`check_values`), all ignored for `none`."""

    type: Literal["median", "successive_halving", "hyperband", "none"] = "median"
    compare: Literal["latest", "best"] | None = None  # median only; null: latest
    n_startup_trials: int | None = None  # median only; null: 2
    n_warmup_steps: int | None = None
    reduction_factor: int | None = None  # successive_halving and hyperband only; null: 3


@dataclass
class SamplerSpec:
    """TPE, random or GP with a study seed, each trial's seed derived from it. `gp` (Optuna's GPSampler) imports
    torch into the supervisor, which otherwise never loads it (a test guards that): the price of its GP model."""

    type: Literal["tpe", "random", "gp"] = "tpe"
    seed: int = 0


@dataclass
class TrainingSpec:
    """Trainer settings shared by all trials: one code path for CPU and GPU (`accelerator: auto`)."""

    accelerator: str = "auto"
    devices: int = 1  # devices per trial: more than 1 runs the trial with Lightning DDP on a slot of that many
    num_nodes: int = 1  # a trial spans one host (checked on load); more hosts run more workers
    precision: str = "auto"
    num_workers: int = 0
    validation_batch_size: int = 16
    max_duration: float = 40.0
    min_duration: float = 0.1
    seed: int = 0
    keep_checkpoints: Literal["best", "all", "none"] = "best"
    tokenizers: Literal["archive", "extract"] = "archive"  # resolve inside the .nemo, or extract to files


@dataclass
class TrackingSpec:
    """Where MLflow runs go; `uri: null` means `sqlite:///mlruns/mlflow.db` next to the sweep."""

    uri: str | None = None
    experiment: str | None = None


@dataclass
class BehaviourSpec:
    """A custom behaviour: placeholder special tokens put into the decoder prompt per manifest line.

    `field` names a boolean manifest field; lines where it is true get `on`, the others `off`.
    `default` is used for lines without the field (null: the field is required on every line)."""

    on: str
    off: str
    field: str
    default: bool | None = None


@dataclass
class LaunchSpec:
    """How `harness launch` submits the sweep's worker jobs (through submitit): where, how many, with what.

    Each job runs `harness worker` on the shared study. `local` runs the jobs on this machine, each on
    its own share of the GPUs; `slurm` submits them (one job array by default). The resource keys and
    `setup` apply to Slurm jobs; `env` to both. Credentials never go here (the YAML is committed and
    logged): workers take them from the environment `harness launch` runs in."""

    executor: Literal["local", "slurm"] = "local"
    workers: int = 2  # worker jobs; each runs one trial per `training.devices` of its GPUs
    gpus_per_worker: int = 1  # Slurm's --gpus-per-node; 0: CPU workers
    cpus_per_worker: int = 8
    mem_gb: int | None = None
    time_minutes: int = 240  # a worker stops cleanly 90 s before this, its trial re-queued for the others
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    container_image: str | None = None  # pyxis/enroot: `srun --container-image`
    container_mounts: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # e.g. NCCL settings; never credentials
    setup: list[str] = field(default_factory=list)  # shell lines before the worker, e.g. activating a venv
    array: bool = True  # one Slurm job array of `workers` tasks, else that many jobs
    log_dir: str | None = None  # null: mlruns/launch/<sweep name>
    python: str | None = None  # the jobs' interpreter; null: this one, or `python` inside `container_image`


@dataclass
class SweepSpec:
    """One sweep: the model, the data, the search space and the budget."""

    name: str
    model: str
    data: DataSpec
    search_space: str
    budget: BudgetSpec = field(default_factory=BudgetSpec)
    objective: ObjectiveSpec = field(default_factory=ObjectiveSpec)
    pruner: PrunerSpec = field(default_factory=PrunerSpec)
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    tracking: TrackingSpec = field(default_factory=TrackingSpec)
    behaviours: dict[str, BehaviourSpec] = field(default_factory=dict)
    launch: LaunchSpec = field(default_factory=LaunchSpec)
    start_from: list[dict[str, Any]] = field(default_factory=list)  # params of the first trials (harness.start_from)
    storage: str | None = None
    source: str = ""

    @property
    def state_dir(self) -> Path:
        """Runtime state (databases, trial work dirs) lives under `mlruns/`, git-ignored."""
        return STATE_DIR.resolve()

    @property
    def trials_dir(self) -> Path:
        return self.state_dir / "trials" / self.name

    def use_stores(self, *, storage: str | None, tracking_uri: str | None) -> None:
        """Fix the stores this process uses (`store_uris`): a command line's or a trial job's URIs win."""
        self.storage, self.tracking.uri = store_uris(self, storage=storage, tracking_uri=tracking_uri)

    @property
    def storage_url(self) -> str:
        """The Optuna storage this process uses (`store_uris`)."""
        return store_uris(self).storage

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI this process uses (`store_uris`)."""
        return store_uris(self).tracking

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def directions(self) -> list[Direction]:
        """One direction per objective; `pareto` minimises WER and maximises BLEU."""
        return objective_directions(self.objective.metric)

    @property
    def direction(self) -> Direction:
        """The primary objective's direction (WER's for `pareto`): it orders tables and picks "best"."""
        return self.directions[0]

    @property
    def multi_objective(self) -> bool:
        return len(self.directions) > 1


class StoreURIs(typing.NamedTuple):
    """The Optuna storage URL and the MLflow tracking URI of one process."""

    storage: str
    tracking: str


def store_uris(spec: SweepSpec, *, storage: str | None = None, tracking_uri: str | None = None) -> StoreURIs:
    """The stores this process uses, each the first given of: the command line's (or the trial job's), the spec's
    (`storage:`, `tracking.uri:`), $HARNESS_STORAGE / $HARNESS_TRACKING_URI, a SQLite file under mlruns/ (the
    tracking URI is always explicit: MLflow 3 refuses the plain ./mlruns file store)."""
    state = spec.state_dir
    return StoreURIs(
        storage or spec.storage or os.environ.get(ENV_STORAGE) or f"sqlite:///{state / 'optuna.db'}",
        tracking_uri or spec.tracking.uri or os.environ.get(ENV_TRACKING_URI) or f"sqlite:///{state / 'mlflow.db'}",
    )


def find_spec_file(name_or_path: str) -> Path:
    """`canary-tiny` -> `sweeps/canary-tiny.yaml`; an explicit YAML path is taken as is."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        candidates = [path]
    else:
        candidates = [SWEEPS_DIR / f"{name_or_path}.yaml", SWEEPS_DIR / f"{name_or_path}.yml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml")) if SWEEPS_DIR.is_dir() else []
    raise SpecError(
        f"No sweep spec {candidates[0]} (run from the project root; known sweeps: {', '.join(known) or 'none'})."
    )


def load_spec(name_or_path: str) -> SweepSpec:
    """Read and validate a sweep spec; the sweep's name is the file's stem."""
    path = find_spec_file(name_or_path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise SpecError(f"{path} must be a mapping of keys (model, data, search_space, ...).")
    raw = {"name": path.stem, **_renamed_keys(raw, path), "source": str(path)}
    spec = build(SweepSpec, raw, where=str(path), prefix="")
    check_values(spec, where=str(path))
    return spec


_RENAMED_KEYS = {"custom_tokens": "behaviours"}  # old top-level key -> its name now
_warned: set[tuple[str, str]] = set()


def _renamed_keys(raw: dict, path: Path) -> dict:
    """`raw` with old top-level keys under their new names; one warning line per file and key, once a process."""
    for old, new in _RENAMED_KEYS.items():
        if old not in raw:
            continue
        if new in raw:
            raise SpecError(f"{path}: `{old}` and `{new}` are the same key; keep `{new}` only.")
        if (str(path), old) not in _warned:
            _warned.add((str(path), old))
            print(f"warning: {path}: `{old}` is deprecated; rename it to `{new}`.", file=sys.stderr)
        raw = {(new if k == old else k): v for k, v in raw.items()}
    return raw


def read_yaml(path: Path) -> Any:
    """Parse a user's YAML file as UTF-8 (not the locale's encoding), naming the line of a bad byte."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"{path} cannot be read ({exc.strerror or exc}); check the path and its permissions.") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at column {column}); "
            f"save the file as UTF-8 (for Latin-1 text: `iconv -f latin1 -t utf-8 {path} > fixed.yaml`)."
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path} is not valid YAML: {exc}") from None


# PyYAML reads YAML 1.1, where an unquoted `on:` / `off:` key is the boolean True / False.
_YAML11_BOOLEAN_KEYS = {True: "on", False: "off"}


def build(cls: type, raw: Any, *, where: str, prefix: str) -> Any:
    """Build dataclass `cls` from `raw`, naming `where:key` on any unknown key or wrong type."""
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: `{prefix.rstrip('.') or 'top level'}` must be a mapping.")
    raw = {_YAML11_BOOLEAN_KEYS.get(k, k): v for k, v in raw.items()}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = prefix + unknown[0]
        raise SpecError(f"{where}: unknown key `{key}` (allowed here: {', '.join(sorted(fields))}).")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        if name in raw:
            value = [raw[name]] if f.metadata.get(ONE_OR_LIST) and isinstance(raw[name], str) else raw[name]
            values[name] = _coerce(hints[name], value, where=where, key=prefix + name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SpecError(f"{where}: missing required key `{prefix + name}`.")
    return cls(**values)


def _coerce(hint: Any, value: Any, *, where: str, key: str) -> Any:
    """Check `value` against a type hint (dataclass, Literal, Optional, dict, list, scalars)."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return build(hint, value, where=where, prefix=key + ".")
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, where=where, key=key)
    if origin is dict:
        if not isinstance(value, dict):
            raise SpecError(f"{where}: `{key}` must be a mapping of names to settings.")
        _, inner = typing.get_args(hint)
        return {str(name): _coerce(inner, item, where=where, key=f"{key}.{name}") for name, item in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise SpecError(f"{where}: `{key}` must be a list (one `- item` per line), not {value!r}.")
        (inner,) = typing.get_args(hint)
        return [_coerce(inner, item, where=where, key=f"{key}[{index}]") for index, item in enumerate(value)]
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise SpecError(f"{where}: `{key}` is {value!r}; use one of {', '.join(map(str, allowed))}.")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise SpecError(f"{where}: `{key}` must be {hint.__name__}, not {value!r}.")
    return value


# Values: keys and types are checked by `build`; these load with the right type but would stop or silently
# break every trial, late (`max_steps: 0` trains nothing, `num_nodes: 2` waits for hosts nobody starts,
# `accelerator: gpus` fails in every trial). Each is refused on load, naming the key.


def check_values(spec: SweepSpec, *, where: str) -> None:
    """Every value check, in the order a user would fix them."""
    _check_devices(spec.training, where=where)
    _check_numbers(spec, where=where)
    _check_pruner(spec.pruner, where=where)
    _check_accelerator(spec.training, where=where)
    _check_launch_env(spec.launch, where=where)
    _check_behaviour_names(spec, where=where)
    _check_retention_limit(spec, where=where)


def _check_devices(training: TrainingSpec, *, where: str) -> None:
    """A trial on one host: the supervisor starts each trial process itself, so a trial spanning hosts
    would wait for processes nobody starts (the device count is one of the `_LIMITS`)."""
    if training.num_nodes != 1:
        raise SpecError(
            f"{where}: `training.num_nodes` is {training.num_nodes!r}, but a trial runs on one host: set it to 1, "
            "give each trial more GPUs with `training.devices`, and use more hosts by running more workers "
            "(`harness launch`, or `harness worker` on each host, as the README's 'Many workers' describes)."
        )


# Numbers that load with the right type but would stop or silently break every trial, late:
# `max_steps: 0` trains nothing, `trials: 0` runs nothing. Dotted key -> (test, the rule in words).
_LIMITS: dict[str, tuple[Callable[[float], bool], str]] = {
    "budget.trials": (lambda v: v >= 1, "at least 1 (trials in total, across runs and workers)"),
    "budget.max_steps": (lambda v: v >= 1, "at least 1 (training steps per trial)"),
    "budget.val_check_interval": (lambda v: v >= 1, "at least 1 (steps between validations)"),
    "budget.timeout_minutes": (lambda v: v > 0, "a number of minutes > 0, or null for no wall-clock limit"),
    "budget.warmup_fraction": (lambda v: 0 <= v < 1, "at least 0 and below 1 (the share of max_steps)"),
    "budget.max_retries": (lambda v: v >= 0, "at least 0"),
    "objective.bleu_weight": (lambda v: v >= 0, "at least 0"),
    # Below 0 it demands that fine-tuning on a new domain improve the old one: every trial would be infeasible.
    "objective.retention_max_wer_increase": (
        lambda v: v >= 0,
        "a fraction of at least 0 (0.05: up to 5 WER points above the zero-shot baseline's retention WER), or null",
    ),
    "pruner.n_startup_trials": (lambda v: v >= 0, "at least 0"),
    "pruner.n_warmup_steps": (lambda v: v >= 0, "at least 0, or null for each trial's learning-rate warm-up"),
    "pruner.reduction_factor": (lambda v: v >= 2, "at least 2 (each rung keeps the best 1/reduction_factor)"),
    "training.devices": (lambda v: v >= 1, "at least 1 (devices per trial)"),
    "training.num_workers": (lambda v: v >= 0, "at least 0 (dataloader worker processes)"),
    "training.validation_batch_size": (lambda v: v >= 1, "at least 1"),
    "training.max_duration": (lambda v: v > 0, "a number of seconds > 0"),
    "training.min_duration": (lambda v: v >= 0, "a number of seconds >= 0"),
    "launch.workers": (lambda v: v >= 1, "at least 1 (worker jobs)"),
    "launch.gpus_per_worker": (lambda v: v >= 0, "at least 0 (0: CPU workers)"),
    "launch.cpus_per_worker": (lambda v: v >= 1, "at least 1"),
    "launch.mem_gb": (lambda v: v >= 1, "at least 1 (GB per worker job), or null for the partition's default"),
    "launch.time_minutes": (lambda v: v >= 1, "at least 1 (minutes per worker job)"),
}
# Lightning's accelerator names (`gpu` is its alias of `cuda`); a typo would fail inside every trial.
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


def _check_numbers(spec: SweepSpec, *, where: str) -> None:
    """Refuse out-of-range numbers on load, naming the key, before any model or data is touched."""
    for key, (ok, rule) in _LIMITS.items():
        section, name = key.split(".")
        value = getattr(getattr(spec, section), name)
        if value is not None and not (math.isfinite(value) and ok(value)):
            raise SpecError(f"{where}: `{key}` is {value!r}; it must be {rule}.")
    training = spec.training
    if training.min_duration >= training.max_duration:
        raise SpecError(
            f"{where}: `training.min_duration` ({training.min_duration:g}s) must be below "
            f"`training.max_duration` ({training.max_duration:g}s), or no utterance is trained on."
        )


# Pruner keys that mean something to some types only: set for another, they would silently do nothing.
_PRUNER_KEYS = {
    "compare": ("median",),
    "n_startup_trials": ("median",),
    "reduction_factor": ("successive_halving", "hyperband"),
}


def _check_pruner(pruner: PrunerSpec, *, where: str) -> None:
    """Refuse a key the chosen pruner would ignore; `type: none` ignores them all, so pruning turns off and
    back on by changing the type alone."""
    if pruner.type == "none":
        return
    for key, owners in _PRUNER_KEYS.items():
        if getattr(pruner, key) is not None and pruner.type not in owners:
            raise SpecError(
                f"{where}: `pruner.{key}` applies to `pruner.type: {' or '.join(owners)}` only, and the type is "
                f"{pruner.type}; remove `pruner.{key}`, or set the type it belongs to."
            )


def _check_accelerator(training: TrainingSpec, *, where: str) -> None:
    """A misspelt accelerator is a Lightning error in every trial; name the choices once, on load."""
    if training.accelerator not in ACCELERATORS:
        raise SpecError(
            f"{where}: `training.accelerator` is {training.accelerator!r}; use one of {', '.join(ACCELERATORS)} "
            "(auto: the GPU where there is one, else the CPU)."
        )


def _check_retention_limit(spec: SweepSpec, *, where: str) -> None:
    """The retention limit compares each trial's retention WER with the baseline's: it needs both."""
    if spec.objective.retention_max_wer_increase is None:
        return
    if not spec.data.retention:
        raise SpecError(
            f"{where}: `objective.retention_max_wer_increase` needs retention manifests to score: add "
            "`data.retention` (manifests of the model's old domain), or remove the limit."
        )
    if not spec.budget.baseline:
        raise SpecError(
            f"{where}: `objective.retention_max_wer_increase` is measured against the pretrained model's retention "
            "WER: set `budget.baseline: true`, or remove the limit."
        )


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# `launch.env` is written into job scripts and logs, and the YAML is committed: secrets come from the environment.
_SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "CREDENTIAL")


def _check_launch_env(launch: LaunchSpec, *, where: str) -> None:
    """`launch.env` holds plain settings (NCCL, threads) under valid names, never secrets."""
    for name in launch.env:
        if not _ENV_NAME.fullmatch(name):
            raise SpecError(f"{where}: `launch.env.{name}` is not an environment variable name (A-Z, 0-9, _).")
        if any(word in name.upper() for word in _SECRET_WORDS):
            raise SpecError(
                f"{where}: `launch.env.{name}` looks like a credential; set it in the environment you run "
                "`harness launch` from (workers inherit it), never in the sweep YAML."
            )


_BEHAVIOUR_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _check_behaviour_names(spec: SweepSpec, *, where: str) -> None:
    """A behaviour's name is part of its metric names (`val_wer/terse_on`), which MLflow refuses with
    most punctuation: every trial would fail at its first validation."""
    for name in spec.behaviours:
        if not _BEHAVIOUR_NAME.fullmatch(name):
            raise SpecError(
                f"{where}: `behaviours.{name}` is not a usable behaviour name: it names metrics "
                f"(`val_wer/{name}_on`), so use letters, digits, `_`, `-` and `.` only (e.g. `terse`, `digits`)."
            )
