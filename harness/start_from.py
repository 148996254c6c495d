"""`start_from:` in a sweep YAML: params for the study's first trials, e.g. the recipe a user would try by hand.

Each entry maps search-space params to values; params it leaves out are sampled. The entries are checked
against the search space when the space is loaded (`load_space`): a typo'd key or a value outside its
distribution is an error naming `start_from[i].key`, not a trial that fails late or a warning Optuna
prints while it samples the param instead. They are enqueued once per study, by the one process whose
`optuna.create_study` succeeded (`harness.study.open_study`): not once per worker, not again on a
resume. Each enqueued trial carries its index (`TrialRecord.start_from`) for the console and the report.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from harness.errors import SpecError
from harness.search_space import format_param, load_search_space, number_in_text
from harness.spec import SweepSpec
from harness.trial_record import TrialRecord


def load_space(spec: SweepSpec) -> dict[str, BaseDistribution]:
    """The sweep's search space, with its `start_from` entries checked against it."""
    space = load_search_space(spec.search_space)
    start_from_params(spec, space)
    return space


def enqueue_start_from(study: optuna.Study, spec: SweepSpec, space: dict[str, BaseDistribution]) -> None:
    """Queue the entries as the study's first trials; called once, by the process that created the study."""
    for index, params in enumerate(start_from_params(spec, space)):
        study.enqueue_trial(params, user_attrs=TrialRecord.attrs(start_from=index))


def start_from_params(spec: SweepSpec, space: dict[str, BaseDistribution]) -> list[dict[str, Any]]:
    """The entries as Optuna stores params (a choice as the space writes it, a float range's value as a float)."""
    where = spec.source or f"sweeps/{spec.name}.yaml"
    if len(spec.start_from) > spec.budget.trials:
        raise SpecError(
            f"{where}: `start_from` has {len(spec.start_from)} entries, but `budget.trials` is {spec.budget.trials}: "
            "the last would never run. Raise `budget.trials` or drop entries."
        )
    entries = []
    for index, entry in enumerate(spec.start_from):
        if not entry:
            raise SpecError(f"{where}: `start_from[{index}]` is empty; give it params, e.g. {{lr: 3.0e-4}}.")
        key = f"start_from[{index}]"
        entries.append(
            {name: _value(where, key, spec.search_space, name, value, space) for name, value in entry.items()}
        )
    return entries


def _value(where: str, key: str, path: str, name: str, value: Any, space: dict[str, BaseDistribution]) -> Any:
    """`value` as the distribution of `name` holds it, or an error naming `start_from[i].name` and the fix."""
    dist = space.get(name)
    if dist is None:
        raise SpecError(
            f"{where}: `{key}.{name}` is not a parameter of the search space {path} (its parameters: "
            f"{', '.join(space)}); remove it, or add `{name}` to the search space."
        )
    if isinstance(dist, CategoricalDistribution):
        for choice in dist.choices:  # `true` is not 1, `"20"` is not 20: the value is a choice, of its kind
            if _kind(choice) is _kind(value) and choice == value:
                return choice
        choices = ", ".join(map(format_param, dist.choices))
        raise SpecError(f"{where}: `{key}.{name}` is {value!r}; use one of {choices} (its choices in {path}).")
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    number = number_in_text(value)
    if number is None or (isinstance(dist, IntDistribution) and not float(number).is_integer()):
        kind = "a whole number" if isinstance(dist, IntDistribution) else "a number"
        raise SpecError(f"{where}: `{key}.{name}` is {value!r}; it must be {kind}, like the range in {path}.")
    number = int(number) if isinstance(dist, IntDistribution) else float(number)
    if not dist.low <= number <= dist.high:
        raise SpecError(
            f"{where}: `{key}.{name}` is {format_param(number)}, outside `{name}`'s range "
            f"{format_param(dist.low)}..{format_param(dist.high)} in {path}; use a value inside it, or widen the range."
        )
    if not dist._contains(float(number)):  # the internal representation of both ranges is a float
        raise SpecError(
            f"{where}: `{key}.{name}` is {format_param(number)}, not on `{name}`'s grid in {path} "
            f"({format_param(dist.low)} + k x {format_param(dist.step)}); use a value on it."
        )
    return number


def _kind(value: Any) -> type:
    """Numbers compare across int and float (20 is 20.0); booleans and text only with their own kind."""
    if isinstance(value, bool):
        return bool
    return float if isinstance(value, int | float) else type(value)
