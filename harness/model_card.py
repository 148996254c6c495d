"""What a registered version says about itself: its description in the MLflow Model Registry.

A user who opens the version in the Models tab sees where it came from (sweep, trial, runs, report), its
setting and figures, how sure the sweep was (the parent run's paired bootstrap intervals), and how to load it.
"""

from __future__ import annotations

from collections.abc import Mapping

from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial

from harness.champion import CHAMPION, Figure
from harness.names import run_name
from harness.number_text import metrics_text, params_text
from harness.objective import objective_names
from harness.report import report_dir
from harness.spec import SweepSpec
from harness.trial_record import TrialRecord, model_params


def description(
    spec: SweepSpec,
    trial: FrozenTrial,
    figure: Figure | None,
    test: Mapping[str, float],
    *,
    run_id: str,
    parent: str,
    name: str,
    client: MlflowClient,
) -> str:
    """The version's description: where it came from, its setting, figures and intervals, and how to load it."""
    record = TrialRecord.of(trial)
    judged = (
        f"{figure.name} = {figure.value:.4f} on {figure.manifest} (digest {figure.digest or 'unknown'})"
        if figure
        else "none (no objective value recorded)"
    )
    lines = [
        f"{run_name(trial.number)} of sweep `{spec.name}` (Optuna study `{spec.name}`), fine-tuned from "
        f"`{spec.model}`.",
        "",
        f"- setting: {params_text(model_params(trial))}",
        f"- objective ({', '.join(objective_names(spec.objective))}): {trial.values}",
        f"- validation: {metrics_text(record.final) or 'none recorded'}",
        f"- test: {metrics_text(test) or 'not scored'}",
        f"- judged by: {judged}",
        f"- how sure (95% paired bootstrap, the parent run's `ci_*`): {_intervals_text(client, parent)}",
        f"- MLflow runs: sweep {parent}, trial {record.mlflow_run_id}, registration {run_id}",
        f"- report: {report_dir(spec) / 'report.md'} (`harness report {spec.name}`)",
        "",
        f'Load: `mlflow.pyfunc.load_model("models:/{name}@{CHAMPION}").predict(["a.wav"], '
        'params={"source_lang": "en", "target_lang": "en"})`',
    ]
    return "\n".join(lines)


def _intervals_text(client: MlflowClient, parent: str) -> str:
    """The sweep's overall intervals (`ci_<set>_<figure>_vs_<other>`), as `test_wer_vs_baseline -0.863 [...]`."""
    metrics = client.get_run(parent).data.metrics
    names = sorted(k.removesuffix("_delta") for k in metrics if k.startswith("ci_") and k.endswith("_delta"))
    shown = [
        f"{n[3:]} {metrics[n + '_delta']:+.3f} [{metrics[n + '_low']:.3f}, {metrics[n + '_high']:.3f}]"
        for n in names
        if "/" not in n and n + "_low" in metrics and n + "_high" in metrics
    ]
    return "; ".join(shown) or "none computed (no predictions to compare)"
