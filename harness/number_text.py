"""Numbers as text: figures, objective values, metrics and params, alike in console lines and report tables."""

from __future__ import annotations

from collections.abc import Mapping

from harness.search_space import format_param


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
