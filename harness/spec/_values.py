"""The values a sweep spec may hold, checked on load (`check_values`), each refusal naming the file and key.

Keys and types are checked while the YAML is read (`harness.spec._loading.build`); these values load with the
right type but would stop or silently break every trial, late (`max_steps: 0` trains nothing, `num_nodes: 2`
waits for hosts nobody starts, `accelerator: gpus` fails in every trial).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from harness.errors import SpecError
from harness.spec._schema import LaunchSpec, PrunerSpec, SweepSpec, TrainingSpec


def check_values(spec: SweepSpec, *, where: str) -> None:
    """Every value check, in the order a user would fix them."""
    _check_devices(spec.training, where=where)
    _check_numbers(spec, where=where)
    _check_pruner(spec.pruner, where=where)
    _check_accelerator(spec.training, where=where)
    _check_launch_env(spec.launch, where=where)
    _check_behaviour_names(spec, where=where)
    _check_retention_limit(spec, where=where)
    _check_replay(spec, where=where)
    _check_pareto_retention(spec, where=where)
    _check_confirm(spec, where=where)
    _check_registry(spec, where=where)


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
    "budget.confirm.top": (lambda v: v >= 1, "at least 1 (settings whose seeds are confirmed)"),
    "budget.confirm.seeds": (lambda v: v >= 1, "at least 1 (new training seeds per setting)"),
    "budget.confirm.cheaper_within": (lambda v: 0 <= v <= 1, "from 0 (never) to 1 (a relative gap of the means)"),
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
    "launch.cpus_per_worker": (lambda v: v >= 1, "at least 1, or null for 8 (fewer where nodes have fewer)"),
    "launch.mem_gb": (lambda v: v >= 1, "at least 1 (GB per worker job), or null for the partition's default"),
    "launch.time_minutes": (lambda v: v >= 1, "at least 1 (minutes per worker job)"),
}
# Lightning's accelerator names (`gpu` is its alias of `cuda`); a typo would fail inside every trial.
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


def _check_numbers(spec: SweepSpec, *, where: str) -> None:
    """Refuse out-of-range numbers on load, naming the key, before any model or data is touched."""
    for key, (ok, rule) in _LIMITS.items():
        value: Any = spec
        for name in key.split("."):  # a section left out (`budget.confirm: null`) has no numbers to check
            value = getattr(value, name) if value is not None else None
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


def _check_pareto_retention(spec: SweepSpec, *, where: str) -> None:
    """The retention WER as a second objective needs retention sets, and one new-domain figure beside it."""
    if not spec.objective.pareto_retention:
        return
    if not spec.data.retention:
        raise SpecError(
            f"{where}: `objective.pareto_retention` makes the retention WER an objective, but there is no "
            "`data.retention` to score it on: add manifests of the model's old domain, or remove the key."
        )
    if spec.objective.metric == "pareto":
        raise SpecError(
            f"{where}: `objective.pareto_retention` sets the retention WER against one new-domain figure, but "
            "`objective.metric` is `pareto` (two already): choose `wer`, `wer_normalized`, `bleu` or `mix`."
        )


REPLAY_KNOB = "replay_fraction"  # harness.replay.PARAM (harness.replay imports this package)


def _check_replay(spec: SweepSpec, *, where: str) -> None:
    """`replay_fraction` blends the `data.replay` manifests into training: either without the other would
    tune nothing. The search space is read for its keys only; `harness.search_space` checks its entries."""
    keys = _space_keys(spec.search_space)
    if keys is None:
        return
    knob = REPLAY_KNOB in keys
    if knob and not spec.data.replay:
        raise SpecError(
            f"{where}: the search space {spec.search_space} has `{REPLAY_KNOB}`, but `data.replay` names no "
            "manifests to blend in: add `data.replay` (old-domain training manifests, e.g. a sample of the "
            f"pretraining data), or remove `{REPLAY_KNOB}`."
        )
    if spec.data.replay and not knob:
        raise SpecError(
            f"{where}: `data.replay` is set, but the search space {spec.search_space} has no `{REPLAY_KNOB}`, so "
            f"no trial would train on it: add `{REPLAY_KNOB}` (e.g. {{type: float, low: 0.0, high: 0.5}}), or "
            "remove `data.replay`."
        )


def _space_keys(path: str) -> set[str] | None:
    """The parameter names of a search-space YAML; None when it is missing or unreadable (loading the
    space says why, naming the file)."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return set(raw) if isinstance(raw, dict) else None


def _check_confirm(spec: SweepSpec, *, where: str) -> None:
    """A confirmed winner is the best mean of one figure; a Pareto front has no single mean to rank."""
    if spec.budget.confirm is not None and spec.multi_objective:
        pareto = "`objective.pareto_retention` is true" if spec.objective.pareto_retention else "`metric` is `pareto`"
        raise SpecError(
            f"{where}: `budget.confirm` ranks settings by the mean of one objective, but {pareto}: choose one "
            "(`wer`, `wer_normalized`, `bleu` or `mix`, without `pareto_retention`), or remove `budget.confirm`."
        )


# MLflow refuses `/` and `:` in a registered model's name; `@` and the rest would break `models:/NAME@champion`
# URIs and registry search filters. Names are the registry's `String(256)` column.
_REGISTRY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
REGISTRY_NAME_CHARS = 256


def registry_name_problem(name: str) -> str | None:
    """Why `name` cannot name a registered model (in MLflow and in a `models:/NAME@champion` URI); None if it can."""
    if len(name) > REGISTRY_NAME_CHARS:
        return f"it is {len(name)} characters long; MLflow takes at most {REGISTRY_NAME_CHARS}"
    if not _REGISTRY_NAME.fullmatch(name):
        return (
            "use letters, digits, `_`, `-` and `.`, starting with a letter or digit (e.g. `canary-demo`): MLflow "
            "refuses `/` and `:` in model names, and `models:/NAME@champion` URIs need the rest"
        )
    return None


def _check_registry(spec: SweepSpec, *, where: str) -> None:
    """A registry name MLflow would refuse fails at the sweep's end, after every trial: refuse it on load."""
    if spec.registry is None:
        return
    problem = registry_name_problem(spec.registry.name)
    if problem:
        raise SpecError(f"{where}: `registry.name` is {spec.registry.name!r}; {problem}.")
    if spec.training.keep_checkpoints == "none":
        raise SpecError(
            f"{where}: `registry.name` registers the chosen trial's checkpoint, but `training.keep_checkpoints` is "
            "none: set it to best (or all), or remove `registry`."
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
