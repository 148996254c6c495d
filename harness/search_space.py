"""Search spaces: `search_spaces/*.yaml` turned into Optuna distributions.

Only parameters the trial knows how to apply are accepted (see `KNOWN_PARAMS`): a knob the
trial would silently ignore is worse than an error, because the sweep would "tune" nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna.distributions as od
import yaml

from harness.errors import HarnessError

FREEZE_MODES = ("none", "encoder", "encoder_bn_se", "all_but_bn_se")

# name -> what it means; config surgery (harness.canary) applies each one.
KNOWN_PARAMS = {
    "lr": "peak learning rate of optim (log scale is usual)",
    "batch_duration": "train_ds.batch_duration, seconds of audio per batch",
    "freeze": f"freezing mode, one of {', '.join(FREEZE_MODES)}",
    "use_loss_mask_for_prompt": "exclude decoder prompt tokens from the training loss",
    "weight_decay": "optim.weight_decay",
    "warmup_fraction": "share of max_steps spent warming up the learning rate",
}


def load_search_space(path: str | Path) -> dict[str, od.BaseDistribution]:
    """Read a search-space YAML into `{param: distribution}`, validating every entry."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"Search space {path} does not exist (set `search_space:` in the sweep spec).")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict) or not raw:
        raise HarnessError(f"{path} must map parameter names to {{type: ..., ...}} entries.")
    return {name: _distribution(name, entry, path) for name, entry in raw.items()}


def _distribution(name: str, entry: Any, path: Path) -> od.BaseDistribution:
    """One entry: `{type: float|int, low, high, log?, step?}` or `{type: categorical, choices}`."""
    if name not in KNOWN_PARAMS:
        known = ", ".join(KNOWN_PARAMS)
        raise HarnessError(f"{path}: unknown parameter `{name}`; the trial can apply: {known}.")
    if not isinstance(entry, dict) or "type" not in entry:
        raise HarnessError(f"{path}: `{name}` needs a `type` (float, int or categorical).")
    kind = entry["type"]
    args = {k: v for k, v in entry.items() if k != "type"}
    try:
        if kind == "float":
            dist = od.FloatDistribution(float(args.pop("low")), float(args.pop("high")), **_flags(args))
        elif kind == "int":
            dist = od.IntDistribution(int(args.pop("low")), int(args.pop("high")), **_flags(args))
        elif kind == "categorical":
            dist = od.CategoricalDistribution(list(args.pop("choices")))
        else:
            raise HarnessError(f"{path}: `{name}.type` is {kind!r}; use float, int or categorical.")
    except KeyError as exc:
        raise HarnessError(f"{path}: `{name}` is missing `{exc.args[0]}`.") from None
    except (ValueError, TypeError) as exc:
        raise HarnessError(f"{path}: `{name}` is invalid: {exc}.") from None
    if args:
        raise HarnessError(f"{path}: `{name}` has unknown keys {sorted(args)}.")
    if name == "freeze":
        bad = [c for c in dist.choices if c not in FREEZE_MODES]
        if bad:
            raise HarnessError(f"{path}: `freeze` choice {bad[0]!r} is unknown; use {', '.join(FREEZE_MODES)}.")
    return dist


def _flags(args: dict) -> dict:
    """Pop the optional `log` and `step` flags shared by float and int distributions."""
    flags = {}
    for key in ("log", "step"):
        if key in args:
            flags[key] = args.pop(key)
    return flags


def format_param(value: Any) -> str:
    """A readable string for MLflow and reports: 3e-4, not 0.00030000000000000003."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
