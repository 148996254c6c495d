"""The sweep spec's sections as typed dataclasses, and the stores a process uses (`store_uris`).

Each field's type is what `harness.spec._loading.build` checks a YAML value against; a field's default is
the value a sweep gets when its YAML leaves the key out.
"""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.directions import Direction, objective_directions

STATE_DIR = Path("mlruns")
ENV_STORAGE = "HARNESS_STORAGE"
ENV_TRACKING_URI = "HARNESS_TRACKING_URI"
ONE_OR_LIST = "one_or_list"  # field metadata: a list field that also takes one item as is


@dataclass
class DataSpec:
    """The user's NeMo manifests and which fields hold the target text and language.

    `retention`: manifests of what the model must keep doing (its old domain), scored after every
    complete trial and on the baseline (`harness.retention`); one path or a list.
    `replay`: old-domain training manifests (a sample of the pretraining data), blended into a trial's
    batches at its `replay_fraction` (`harness.replay`); one path or a list."""

    train: str
    validation: str
    test: str | None = None
    retention: list[str] = field(default_factory=list, metadata={ONE_OR_LIST: True})
    replay: list[str] = field(default_factory=list, metadata={ONE_OR_LIST: True})
    text_field: str = "text"
    lang_field: str = "target_lang"


@dataclass
class ConfirmSpec:
    """Seed confirmation (`harness.confirmation`): after the search, each of the `top` best settings trains
    `seeds` more times with new training seeds, full length and unpruned; the winner is the best mean. A cheaper
    setting (frozen, smaller batch_duration) that cannot be told apart from it and whose mean is within
    `cheaper_within` of it (relative) is chosen instead; 0 turns that off (benchmarks/RESULTS.md, decision)."""

    top: int = 2
    seeds: int = 2
    cheaper_within: float = 0.1


@dataclass
class BudgetSpec:
    """How much compute the sweep may spend: trials in total and steps per trial (confirmation runs have
    their own budget: `confirm.top` x `confirm.seeds`)."""

    trials: int = 6
    max_steps: int = 200
    val_check_interval: int = 50
    timeout_minutes: float | None = None
    warmup_fraction: float = 0.1
    max_retries: int = 1
    baseline: bool = True  # evaluate the pretrained model once, so every trial is read against it
    confirm: ConfirmSpec | None = None  # null: the best single run is the decision


@dataclass
class ObjectiveSpec:
    """What Optuna optimises: WER as written (minimise), `wer_normalized` (WER after Whisper's English
    normaliser with OpenAI's spelling table for English, then lower-casing and stripping punctuation;
    minimise), BLEU (maximise), `wer - bleu_weight * bleu`, or `pareto`: WER and BLEU at once (a
    multi-objective study; its trials are not pruned). `pareto_retention` adds the retention WER
    (`data.retention`, minimised) as a second objective: a Pareto study of the new domain against the old."""

    metric: Literal["wer", "wer_normalized", "bleu", "mix", "pareto"] = "wer"
    bleu_weight: float = 1.0
    # A complete trial whose retention WER exceeds the baseline's by more than this (0.05 = 5 WER points)
    # is infeasible: never the best, and TPE steers away (`harness.retention`).
    retention_max_wer_increase: float | None = None
    pareto_retention: bool = False  # the retention WER as a second objective (with a single-figure `metric`)

    @property
    def meaning(self) -> str:
        """What the decision was made on, in words for the report."""
        retention = " and the retention WER together (Pareto front)" if self.pareto_retention else ""
        return self._metric_meaning + retention

    @property
    def _metric_meaning(self) -> str:
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
    cpus_per_worker: int | None = None  # null: 8, or fewer where the partition's nodes have fewer
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
    requeue: bool = True  # Slurm may requeue a preempted job (--requeue); its worker resumes the study
    log_dir: str | None = None  # null: mlruns/launch/<sweep name>
    python: str | None = None  # the jobs' interpreter; null: this one, or `python` inside `container_image`


@dataclass
class RegistrySpec:
    """The MLflow Model Registry entry the sweep's chosen model lands in (`harness.registry`), in the sweep's
    tracking store: at the sweep's end the chosen trial's `.nemo` becomes a new version of registered model
    `name` (an MLflow pyfunc that transcribes); the alias `champion` moves only to a version that beats it."""

    name: str


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
    registry: RegistrySpec | None = None  # null: the sweep registers nothing (`harness export --register` still can)
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
        """One direction per objective; `pareto` minimises WER and maximises BLEU, `pareto_retention` adds the
        retention WER's (minimised)."""
        return objective_directions(self.objective.metric, retention=self.objective.pareto_retention)

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
        storage or spec.storage or default_storage(),
        tracking_uri or spec.tracking.uri or os.environ.get(ENV_TRACKING_URI) or f"sqlite:///{state / 'mlflow.db'}",
    )


def default_storage() -> str:
    """The Optuna storage of a spec that names none: $HARNESS_STORAGE, else `mlruns/optuna.db` (`store_uris`)."""
    return os.environ.get(ENV_STORAGE) or f"sqlite:///{STATE_DIR.resolve() / 'optuna.db'}"
