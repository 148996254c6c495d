"""What defines a sweep's study: its objective, directions and search space, and a unique id.

All of it is recorded on the study when it is created and compared whenever it is loaded. An
Optuna study keeps its directions forever, so a spec that now says `bleu` where the study was
created for `wer` would rank trials backwards (the "best" trial the one with BLEU 0) and delete
the real best checkpoint; a changed search space would mix two sweeps in one sampler. Such a
mismatch stops with what changed and how to start a new sweep, instead of mixing. The retention
limit is part of it too: each trial was judged feasible or not under it when it completed.

The uid tells recreations apart: a study made afresh in a recreated database gets a new one,
so it never takes over the MLflow parent run of the study it replaced.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, distribution_to_json, json_to_distribution

from harness.errors import DefinitionError
from harness.spec import SweepSpec
from harness.stores import store_name

DEFINITION_ATTR = "harness_study"  # {uid, objective, bleu_weight?, retention_max_wer_increase?, directions, ...}
RETENTION_LIMIT = "retention_max_wer_increase"
CREATOR_WAIT_S = 10.0  # how long a loader waits for the worker that just created the study to record it


def definition(spec: SweepSpec, space: dict[str, BaseDistribution]) -> dict[str, Any]:
    """What must stay the same for trials to be comparable (BLEU's weight only matters for `mix`)."""
    recorded: dict[str, Any] = {"objective": spec.objective.metric, "directions": list(spec.directions)}
    if spec.objective.metric == "mix":
        recorded["bleu_weight"] = spec.objective.bleu_weight
    if spec.objective.retention_max_wer_increase is not None:
        recorded[RETENTION_LIMIT] = spec.objective.retention_max_wer_increase
    recorded["search_space"] = {name: distribution_to_json(d) for name, d in sorted(space.items())}
    return recorded


def save_definition(study: optuna.Study, spec: SweepSpec, space: dict[str, BaseDistribution]) -> None:
    """Called by the worker that created the study, before any trial exists."""
    study.set_user_attr(DEFINITION_ATTR, {"uid": uuid.uuid4().hex, **definition(spec, space)})


def study_uid(study: optuna.Study) -> str | None:
    return (study.user_attrs.get(DEFINITION_ATTR) or {}).get("uid")


def check_study(
    spec: SweepSpec, study: optuna.Study, space: dict[str, BaseDistribution] | None, *, adopt: bool
) -> None:
    """Stop if the spec no longer defines the stored study; `space=None` skips the search space.

    A study made by an older harness records nothing: its directions and its trials' distributions
    are checked instead and, when `adopt`, the current definition is recorded with a new uid.
    """
    recorded = _recorded(study)
    directions = [d.name.lower() for d in study.directions]
    _check_objective(spec, study, recorded, directions)
    _check_retention_limit(spec, study, recorded)
    if space is not None:
        if recorded is None:
            old = _last_distributions(study)
        else:
            old = {name: json_to_distribution(text) for name, text in recorded.get("search_space", {}).items()}
        _check_space(spec, study, old, space)
    if recorded is None and adopt and space is not None:
        save_definition(study, spec, space)


def _recorded(study: optuna.Study) -> dict[str, Any] | None:
    """The recorded definition; a study without trials may be a second old: its creator records it now."""
    deadline = time.monotonic() + CREATOR_WAIT_S
    while True:
        recorded = study.user_attrs.get(DEFINITION_ATTR)
        if recorded or study.get_trials(deepcopy=False) or time.monotonic() > deadline:
            return recorded or None
        time.sleep(0.1)


def _last_distributions(study: optuna.Study) -> dict[str, BaseDistribution]:
    trials = [t for t in study.get_trials(deepcopy=False) if t.distributions]
    return dict(trials[-1].distributions) if trials else {}


def _where(spec: SweepSpec, study: optuna.Study) -> str:
    count = len(study.get_trials(deepcopy=False))
    return f"study {spec.name!r} in {store_name(spec.storage_url)}, {count} trial{'s' * (count != 1)}"


def _new_sweep(spec: SweepSpec) -> str:
    source = spec.source or f"sweeps/{spec.name}.yaml"
    return f"copy {source} to sweeps/<new-name>.yaml and run `harness sweep <new-name>` to start a new sweep"


def _objective_words(metric: str | None, weight: float | None, directions: list[str]) -> str:
    name = metric or "an objective"
    if metric == "mix" and weight is not None:
        name = f"mix with bleu_weight {weight:g}"
    return f"{name} ({', '.join(directions)})"


def _check_objective(spec: SweepSpec, study: optuna.Study, recorded: dict | None, directions: list[str]) -> None:
    """The objective and its directions: a changed one would rank the recorded trials backwards."""
    weight = spec.objective.bleu_weight if spec.objective.metric == "mix" else None
    wanted_directions: list[str] = list(spec.directions)
    was_metric = recorded.get("objective") if recorded else None
    was_weight = recorded.get("bleu_weight") if recorded else None
    same_metric = recorded is None or (was_metric, was_weight) == (spec.objective.metric, weight)
    if same_metric and directions == wanted_directions:
        return
    now = _objective_words(spec.objective.metric, weight, wanted_directions)
    was = _objective_words(was_metric, was_weight, directions)
    raise DefinitionError(
        f"{spec.source or spec.name}: the objective is now {now}, but sweep {spec.name!r} was created for {was} "
        f"({_where(spec, study)}), and one study cannot rank its trials both ways. Put `objective` back to use "
        f"this sweep, or {_new_sweep(spec)}."
    )


def _check_retention_limit(spec: SweepSpec, study: optuna.Study, recorded: dict | None) -> None:
    """Complete trials were told feasible or not under the limit the study was created with; another one
    would judge later trials by a different rule. A study made by an older harness had none."""
    was = (recorded or {}).get(RETENTION_LIMIT)
    now = spec.objective.retention_max_wer_increase
    if was == now or (recorded is None and not study.get_trials(deepcopy=False)):
        return
    words = {None: "no limit"} | {v: f"{v:g}" for v in (was, now) if v is not None}
    raise DefinitionError(
        f"{spec.source or spec.name}: `objective.retention_max_wer_increase` is now {words[now]}, but sweep "
        f"{spec.name!r} was created with {words[was]} ({_where(spec, study)}), and its complete trials were judged "
        f"feasible under that. Put the limit back to use this sweep, or {_new_sweep(spec)}."
    )


def _check_space(
    spec: SweepSpec, study: optuna.Study, old: dict[str, BaseDistribution], space: dict[str, BaseDistribution]
) -> None:
    """The search space: the sampler learns from the recorded trials, which were drawn from the old one."""
    if not old:
        return
    changes = [f"`{n}` added" for n in sorted(set(space) - set(old))]
    changes += [f"`{n}` removed" for n in sorted(set(old) - set(space))]
    changes += [
        f"`{n}` was {_describe(old[n])}, is now {_describe(space[n])}"
        for n in sorted(set(old) & set(space))
        if old[n] != space[n]
    ]
    if not changes:
        return
    raise DefinitionError(
        f"{spec.search_space} changed since sweep {spec.name!r} was created ({_where(spec, study)}): "
        f"{'; '.join(changes)}. Put the search space back to use this sweep, or {_new_sweep(spec)}."
    )


def _describe(dist: BaseDistribution) -> str:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return "one of " + ", ".join(map(str, dist.choices))
    assert isinstance(dist, (optuna.distributions.FloatDistribution, optuna.distributions.IntDistribution))
    scale = " log" if dist.log else ""
    step = f" step {dist.step:g}" if dist.step else ""
    return f"{dist.low:g}..{dist.high:g}{scale}{step}"
