"""The sweep objective: the numbers Optuna sees, built from a validation's figures.

Each validation publishes `val_wer`, `val_wer_normalized` (0..1+ fractions, absent when the set has
no ASR samples) and `val_bleu` (0..1, absent without translation samples), overall, per pair
(`val_wer/en-en`) and per custom behaviour state (`val_wer/terse_on`), all scored by `harness.scoring`
from the hypotheses of NeMo's own decode (`harness.transcripts`). The objective is built from those, never
from `val_loss`, whose meaning changes with `use_loss_mask_for_prompt`. Its directions are
`harness.directions.objective_directions`. Plain arithmetic, apart from the trial's Lightning callbacks
(`harness.metrics`), so the report reads it without Lightning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from harness.spec import ObjectiveSpec

RETENTION_WER = "retention_wer"  # `objective.pareto_retention`'s second objective (`harness.retention.WER`)


def objective_values(metrics: Mapping[str, float], objective: ObjectiveSpec) -> list[float]:
    """The numbers Optuna sees, one per objective. NaN (no samples for it) is an error, not a silent zero.
    With `pareto_retention` the last is the retention WER, scored once after training (`harness.retention`)."""
    values = _metric_values(metrics, objective)
    if objective.pareto_retention:
        values.append(metrics.get(RETENTION_WER, math.nan))
        if math.isnan(values[-1]):
            raise ValueError(
                "objective `pareto_retention` is undefined: the retention sets have no source_lang==target_lang "
                "lines to score a WER on"
            )
    return values


def _metric_values(metrics: Mapping[str, float], objective: ObjectiveSpec) -> list[float]:
    """`objective.metric`'s numbers, from one validation's figures."""
    wer, bleu = metrics.get("val_wer", math.nan), metrics.get("val_bleu", math.nan)
    values = {
        "wer": [wer],
        "wer_normalized": [metrics.get("val_wer_normalized", math.nan)],
        "bleu": [bleu],
        "mix": [wer - objective.bleu_weight * bleu],
        "pareto": [wer, bleu],
    }[objective.metric]
    if any(math.isnan(v) for v in values):
        raise ValueError(
            f"objective `{objective.metric}` is undefined: the validation manifest has no samples for it "
            "(WER needs source_lang==target_lang samples, BLEU needs translation samples)"
        )
    return values


def objective_value(metrics: Mapping[str, float], objective: ObjectiveSpec) -> float:
    """The primary objective (WER for `pareto`): what pruning reports and what "best" means; a validation's
    figures are enough (the retention WER of `pareto_retention` is never primary)."""
    return _metric_values(metrics, objective)[0]


def objective_names(objective: ObjectiveSpec) -> list[str]:
    """The name of each of `objective_values`' numbers, as the study records them (optuna-dashboard's titles)."""
    if objective.metric == "pareto":
        names = ["wer", "bleu"]
    elif objective.metric == "mix":
        names = [f"wer - {objective.bleu_weight:g} * bleu"]
    else:
        names = [objective.metric]
    return [*names, RETENTION_WER] if objective.pareto_retention else names
