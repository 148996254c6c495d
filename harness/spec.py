"""Sweep specs: `sweeps/<name>.yaml`, validated into typed dataclasses.

Every key is checked against the dataclass that owns it, so a typo (`max_step`) or a wrong type
(`trials: six`) is an error naming the file and the dotted key instead of a silently ignored
setting in a sweep that runs for days.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from harness.errors import HarnessError
from harness.spec_values import check_values

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
    each trial's learning-rate warm-up. Keys of another type are refused (spec_values), all ignored for `none`."""

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
    custom_tokens: dict[str, BehaviourSpec] = field(default_factory=dict)
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

    @property
    def storage_url(self) -> str:
        """Optuna storage: the spec's, else $HARNESS_STORAGE, else one SQLite file for all sweeps."""
        url = self.storage or os.environ.get(ENV_STORAGE)
        return url or f"sqlite:///{self.state_dir / 'optuna.db'}"

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking URI, always explicit (MLflow 3 refuses the plain ./mlruns file store)."""
        uri = self.tracking.uri or os.environ.get(ENV_TRACKING_URI)
        return uri or f"sqlite:///{self.state_dir / 'mlflow.db'}"

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def directions(self) -> list[Literal["minimize", "maximize"]]:
        """One direction per objective; `pareto` minimises WER and maximises BLEU."""
        if self.objective.metric == "pareto":
            return ["minimize", "maximize"]
        return ["maximize" if self.objective.metric == "bleu" else "minimize"]

    @property
    def direction(self) -> Literal["minimize", "maximize"]:
        """The primary objective's direction (WER's for `pareto`): it orders tables and picks "best"."""
        return self.directions[0]

    @property
    def multi_objective(self) -> bool:
        return len(self.directions) > 1


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
    raise HarnessError(
        f"No sweep spec {candidates[0]} (run from the project root; known sweeps: {', '.join(known) or 'none'})."
    )


def load_spec(name_or_path: str) -> SweepSpec:
    """Read and validate a sweep spec; the sweep's name is the file's stem."""
    path = find_spec_file(name_or_path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise HarnessError(f"{path} must be a mapping of keys (model, data, search_space, ...).")
    raw = {"name": path.stem, **raw, "source": str(path)}
    spec = build(SweepSpec, raw, where=str(path), prefix="")
    check_values(spec, where=str(path))
    return spec


def read_yaml(path: Path) -> Any:
    """Parse a user's YAML file as UTF-8 (not the locale's encoding), naming the line of a bad byte."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HarnessError(
            f"{path} cannot be read ({exc.strerror or exc}); check the path and its permissions."
        ) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise HarnessError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at column {column}); "
            f"save the file as UTF-8 (for Latin-1 text: `iconv -f latin1 -t utf-8 {path} > fixed.yaml`)."
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise HarnessError(f"{path} is not valid YAML: {exc}") from None


# PyYAML reads YAML 1.1, where an unquoted `on:` / `off:` key is the boolean True / False.
_YAML11_BOOLEAN_KEYS = {True: "on", False: "off"}


def build(cls: type, raw: Any, *, where: str, prefix: str) -> Any:
    """Build dataclass `cls` from `raw`, naming `where:key` on any unknown key or wrong type."""
    if not isinstance(raw, dict):
        raise HarnessError(f"{where}: `{prefix.rstrip('.') or 'top level'}` must be a mapping.")
    raw = {_YAML11_BOOLEAN_KEYS.get(k, k): v for k, v in raw.items()}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = prefix + unknown[0]
        raise HarnessError(f"{where}: unknown key `{key}` (allowed here: {', '.join(sorted(fields))}).")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        if name in raw:
            value = [raw[name]] if f.metadata.get(ONE_OR_LIST) and isinstance(raw[name], str) else raw[name]
            values[name] = _coerce(hints[name], value, where=where, key=prefix + name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise HarnessError(f"{where}: missing required key `{prefix + name}`.")
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
            raise HarnessError(f"{where}: `{key}` must be a mapping of names to settings.")
        _, inner = typing.get_args(hint)
        return {str(name): _coerce(inner, item, where=where, key=f"{key}.{name}") for name, item in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise HarnessError(f"{where}: `{key}` must be a list (one `- item` per line), not {value!r}.")
        (inner,) = typing.get_args(hint)
        return [_coerce(inner, item, where=where, key=f"{key}[{index}]") for index, item in enumerate(value)]
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise HarnessError(f"{where}: `{key}` is {value!r}; use one of {', '.join(map(str, allowed))}.")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise HarnessError(f"{where}: `{key}` must be {hint.__name__}, not {value!r}.")
    return value
