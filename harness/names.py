"""Names the supervisor writes and the report reads: run names, study attribute keys, number text.

They live apart from both, so the report never imports the supervisor (or its subprocess and
signal machinery) to learn a key, and a console line and a report table print numbers alike.
"""

from __future__ import annotations

from collections.abc import Mapping

from harness.search_space import format_param

# Study-level user attributes (a trial's own live in harness.trial_record).
PARENT_ATTR = "mlflow_parent_run_id"  # the sweep's MLflow parent run
BASELINE_ATTR = "baseline"  # the zero-shot validation figures
BASELINE_OWNER_ATTR = "baseline_by"  # the worker evaluating the baseline
TEST_ATTR = "test"  # {"trial": number, "metrics": {...}}: the best checkpoint on the test set


def run_name(number: int) -> str:
    """`trial-0007`: the MLflow run name and the trial's work dir."""
    return f"trial-{number:04d}"


def number_text(value: float | None) -> str:
    """Four decimals; empty for a missing value (tables)."""
    return "" if value is None else f"{value:.4f}"


def value_text(value: float | list[float] | None) -> str:
    """An objective value; a tuple for a multi-objective trial, `-` when there is none (console)."""
    if isinstance(value, list):
        return "(" + ", ".join(f"{v:.4f}" for v in value) + ")"
    return "-" if value is None else f"{value:.4f}"


def metrics_text(metrics: Mapping[str, float]) -> str:
    """`val_wer=0.1234 val_bleu=0.3000`, without the step."""
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "step")


def params_text(params: Mapping[str, object]) -> str:
    """`lr=0.0003 batch_duration=240 ...`, as MLflow shows them."""
    return " ".join(f"{k}={format_param(v)}" for k, v in params.items())
