"""Search spaces: `search_spaces/*.yaml` turned into Optuna distributions.

Only parameters the trial knows how to apply are accepted (see `KNOBS`): a knob the trial would
silently ignore is worse than an error, because the sweep would "tune" nothing. Every choice and
bound is checked against what its knob can take when the space is loaded: `choices: ["false"]`
would train with the loss mask on (`bool("false")` is True) while Optuna, MLflow and the report
all say false, and a negative learning rate would fail every trial, late.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna.distributions as od

from harness.errors import SpecError
from harness.spec import read_yaml

FREEZE_MODES = ("none", "encoder", "encoder_bn_se", "all_but_bn_se")
MERGE_ALPHA = "merge_alpha"


@dataclass(frozen=True)
class Knob:
    """A parameter the trial applies: what it means and which values it can take."""

    meaning: str
    values: str  # the accepted values, in words for error messages
    accepts: Callable[[Any], bool]
    numeric: bool = True  # numbers may come as float/int ranges; the others only as choices
    judged: bool = False  # not sampled: every value is judged after a trial trains (`merge_alphas`)


# Config surgery (harness.canary) and freezing (harness.freezing) apply each one.
KNOBS = {
    "lr": Knob("peak learning rate of optim (log scale is usual)", "a number > 0", lambda v: v > 0),
    "batch_duration": Knob(
        "train_ds.batch_duration, seconds of audio per batch", "a number of seconds > 0", lambda v: v > 0
    ),
    "freeze": Knob(
        f"freezing mode, one of {', '.join(FREEZE_MODES)}",
        f"one of {', '.join(FREEZE_MODES)}",
        lambda v: isinstance(v, str) and v in FREEZE_MODES,
        numeric=False,
    ),
    "use_loss_mask_for_prompt": Knob(
        "exclude decoder prompt tokens from the training loss",
        "true or false (YAML booleans, without quotes)",
        lambda v: isinstance(v, bool),
        numeric=False,
    ),
    MERGE_ALPHA: Knob(
        "weight of the fine-tuned model in its merge with the pretrained one, (1 - a) x pretrained + a x "
        "fine-tuned; every value is judged after training, none sampled (harness.merging)",
        "a number from 0 to 1",
        lambda v: 0 <= v <= 1,
        judged=True,
    ),
    "weight_decay": Knob("optim.weight_decay", "a number >= 0", lambda v: v >= 0),
    "warmup_fraction": Knob(
        "share of max_steps spent warming up the learning rate", "a number >= 0 and below 1", lambda v: 0 <= v < 1
    ),
    "replay_fraction": Knob(
        "share of training cuts drawn from the old-domain `data.replay` manifests (harness.replay)",
        "a number >= 0 and below 1",
        lambda v: 0 <= v < 1,
    ),
}
KNOWN_PARAMS = {name: knob.meaning for name, knob in KNOBS.items()}


def load_search_space(path: str | Path) -> dict[str, od.BaseDistribution]:
    """Read a search-space YAML into `{param: distribution}` for the knobs Optuna samples, validating every
    entry (the judged ones too: `merge_alphas` reads those)."""
    path, raw = _read(path)
    judged = {name: _values(name, entry, path) for name, entry in raw.items() if _judged(name)}
    return {name: _distribution(name, entry, path) for name, entry in raw.items() if name not in judged}


def merge_alphas(path: str | Path) -> tuple[float, ...]:
    """The `merge_alpha` values a complete trial is judged at, ascending; empty when the space has none.

    `{type: categorical, choices: [0.5, 0.75]}`, or `{type: float, low: 0.25, high: 1.0, grid: 4}`: `grid`
    evenly spaced values from low to high (0.25, 0.5, 0.75, 1.0). 1 (the fine-tuned model unmerged, whose
    figures training already gives) is always among them: the choice without a retention limit."""
    path, raw = _read(path)
    if MERGE_ALPHA not in raw:
        return ()
    return tuple(sorted({*_values(MERGE_ALPHA, raw[MERGE_ALPHA], path), 1.0}))


def _read(path: str | Path) -> tuple[Path, dict]:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"Search space {path} does not exist (set `search_space:` in the sweep spec).")
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict) or not raw:
        raise SpecError(f"{path} must map parameter names to {{type: ..., ...}} entries.")
    return path, raw


def _judged(name: str) -> bool:
    knob = KNOBS.get(name)
    return knob is not None and knob.judged


def _values(name: str, entry: Any, path: Path) -> tuple[float, ...]:
    """A judged knob's values: its choices, or `grid` evenly spaced values over a float range."""
    fields = dict(entry) if isinstance(entry, dict) else entry
    grid = fields.pop("grid", None) if isinstance(fields, dict) else None
    dist = _distribution(name, fields, path)
    if isinstance(dist, od.CategoricalDistribution):
        if grid is not None:
            raise SpecError(f"{path}: `{name}` has `grid` and `choices`; a grid belongs to a float range.")
        return tuple(sorted({float(choice) for choice in dist.choices if isinstance(choice, int | float)}))
    if not isinstance(dist, od.FloatDistribution) or dist.log or dist.step is not None:
        raise SpecError(
            f"{path}: `{name}` is judged at every value after training, not sampled: write "
            "`{type: float, low: ..., high: ..., grid: N}` or `{type: categorical, choices: [...]}`."
        )
    if not isinstance(grid, int) or isinstance(grid, bool) or grid < 1 or (grid == 1 and dist.low != dist.high):
        raise SpecError(
            f"{path}: `{name}.grid` is {grid!r}; give the number of evenly spaced values from low to high "
            "(an integer >= 2, e.g. `grid: 4`), or list `choices`."
        )
    step = (dist.high - dist.low) / max(grid - 1, 1)
    values = tuple(sorted({round(dist.low + i * step, 6) for i in range(grid)}))
    if len({format_param(v) for v in values}) < len(values):  # the record and MLflow name each by 4 digits
        raise SpecError(f"{path}: `{name}.grid` {grid} puts values closer than 4 significant digits; use fewer.")
    return values


def _distribution(name: str, entry: Any, path: Path) -> od.BaseDistribution:
    """One entry: `{type: float|int, low, high, log?, step?}` or `{type: categorical, choices}`."""
    knob = KNOBS.get(name)
    if knob is None:
        known = ", ".join(KNOBS)
        raise SpecError(f"{path}: unknown parameter `{name}`; the trial can apply: {known}.")
    if not isinstance(entry, dict) or "type" not in entry:
        raise SpecError(f"{path}: `{name}` needs a `type` (float, int or categorical).")
    kind = entry["type"]
    args = {k: v for k, v in entry.items() if k != "type"}
    if kind not in ("float", "int", "categorical"):
        raise SpecError(f"{path}: `{name}.type` is {kind!r}; use float, int or categorical.")
    if kind != "categorical" and not knob.numeric:
        raise SpecError(f"{path}: `{name}` must be `type: categorical` with choices from: {knob.values}.")
    dist: od.BaseDistribution
    try:
        if kind == "categorical":
            dist = od.CategoricalDistribution(_choices(name, knob, args.pop("choices"), path))
        else:
            low, high = (_bound(name, knob, key, args.pop(key), kind, path) for key in ("low", "high"))
            flags = _flags(name, args, low, high, path)
            if kind == "float":
                dist = od.FloatDistribution(low, high, **flags)
            else:
                dist = od.IntDistribution(int(low), int(high), **flags)
    except KeyError as exc:
        raise SpecError(f"{path}: `{name}` is missing `{exc.args[0]}`.") from None
    except (ValueError, TypeError) as exc:
        raise SpecError(f"{path}: `{name}` is invalid: {exc}.") from None
    if args:
        raise SpecError(f"{path}: `{name}` has unknown keys {sorted(args)}.")
    return dist


def _choices(name: str, knob: Knob, choices: Any, path: Path) -> list:
    """Every choice must be a value the knob takes, of the right type: Optuna records it verbatim."""
    if not isinstance(choices, list) or not choices:
        raise SpecError(f"{path}: `{name}.choices` must be a non-empty list, like [a, b].")
    for choice in choices:
        if knob.numeric:
            if isinstance(choice, str):
                raise SpecError(
                    f"{path}: `{name}` choice {choice!r} is text, not a number; write it without quotes "
                    "(YAML reads 1e-4 without a decimal point as text: write 1.0e-4)."
                )
            if not _is_number(choice):
                raise SpecError(f"{path}: `{name}` choice {choice!r} is not a number; `{name}` must be {knob.values}.")
        elif name == "use_loss_mask_for_prompt" and isinstance(choice, str):
            raise SpecError(
                f"{path}: `{name}` choice {choice!r} is text, not a boolean (the trial would read any "
                "non-empty text as true); write true or false without quotes."
            )
        elif name == "freeze" and not knob.accepts(choice):
            raise SpecError(f"{path}: `freeze` choice {choice!r} is unknown; use {', '.join(FREEZE_MODES)}.")
        if not knob.accepts(choice):
            raise SpecError(f"{path}: `{name}` choice {choice!r} is not allowed; `{name}` must be {knob.values}.")
    return choices


def _bound(name: str, knob: Knob, key: str, value: Any, kind: str, path: Path) -> float | int:
    """A range's `low` or `high`: a finite number the knob accepts (whole for int ranges).

    A string that reads as a number is taken as that number: PyYAML reads `1e-5` (no decimal
    point) as text, and a bound only ever reaches Optuna as a float."""
    number = number_in_text(value)
    if number is None:
        raise SpecError(f"{path}: `{name}.{key}` is {value!r}; it must be a number ({knob.values}).")
    if kind == "int":
        if not float(number).is_integer():
            raise SpecError(
                f"{path}: `{name}.{key}` is {value!r}, but an int range needs whole numbers; "
                "use `type: float` or a whole number."
            )
        number = int(number)
    else:
        number = float(number)
    if not knob.accepts(number):
        raise SpecError(f"{path}: `{name}.{key}` is {value!r}, but `{name}` must be {knob.values}.")
    return number


def _flags(name: str, args: dict, low: float, high: float, path: Path) -> dict:
    """Pop the optional `log` and `step` flags shared by float and int ranges, checked against the bounds."""
    if low > high:
        raise SpecError(f"{path}: `{name}.low` ({low:g}) is above `{name}.high` ({high:g}); swap them.")
    flags = {key: args.pop(key) for key in ("log", "step") if key in args}
    log = flags.get("log", False)
    if not isinstance(log, bool):
        raise SpecError(f"{path}: `{name}.log` is {log!r}; write true or false without quotes.")
    if log and low <= 0:
        raise SpecError(
            f"{path}: `{name}` has `log: true` but `low` is {low:g}; a log range needs low > 0: "
            "raise `low` or drop `log`."
        )
    step = flags.get("step")
    if step is not None and (not _is_number(step) or step <= 0):
        raise SpecError(f"{path}: `{name}.step` is {step!r}; it must be a number > 0.")
    return flags


def number_in_text(value: Any) -> float | int | None:
    """A finite number, or text that reads as one (PyYAML reads `1e-5`, without a decimal point, as text)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    return value if _is_number(value) else None


def _is_number(value: Any) -> bool:
    """A real, finite int or float (YAML's `true` is a bool, not 1; `.nan` and `.inf` are no values)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def format_param(value: Any) -> str:
    """A readable string for MLflow and reports: 3e-4, not 0.00030000000000000003."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
