"""The MLflow UI link the harness prints, rendered by the tracking server's own UI in headless Chromium.

MLflow 3's UI opens an experiment on its GenAI pages unless told `workflowType=machine_learning`, folds
child runs under their parent and shows no param columns until asked: the printed link must land on
the trials' runs table. Uses conftest's shared `report_sweep` (a real `mlflow server`).
"""

from __future__ import annotations

import re

from mlflow.tracking import MlflowClient

from harness.provenance import manifest_file
from harness.report._console import mlflow_ui_command
from harness.tracking import run_name
from tests.conftest import SEARCH_SPACE, SWEEP
from tests.helpers import chromium, load_study

BUDGET_MS = 15000  # virtual time: the page's scripts and API calls settle well within it


def _page_text(url: str, profile) -> str:
    """The rendered page's visible text (scripts and styles dropped), one space between words."""
    proc = chromium(profile, "--window-size=3000,1200", f"--virtual-time-budget={BUDGET_MS}", "--dump-dom", url)
    assert proc.returncode == 0 and "</html>" in proc.stdout, proc.stderr[-3000:]
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", proc.stdout, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))


def test_the_printed_link_opens_the_trials_runs_table(report_sweep, monkeypatch, tmp_path):
    spec = report_sweep.enter(monkeypatch)
    experiment = MlflowClient(report_sweep.uri).get_experiment_by_name(spec.experiment_name)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = f"{report_sweep.uri}/#/experiments/{experiment.experiment_id}/runs"
    link = f"{runs}?workflowType=machine_learning&viewStateShareKey={SWEEP}"
    assert mlflow_ui_command(spec) == f"open {link}"

    page = _page_text(link, tmp_path / "linked")
    assert "Overview" not in page  # the model-training layout: no GenAI overview page in the side bar
    study = load_study(spec)
    names = [run_name(t.number) for t in study.trials]
    assert all(name in page for name in [*names, "baseline"]), page[:3000]  # flat, not folded under the parent
    best = page.index(run_name(study.best_trial.number))
    worse = [run_name(t.number) for t in study.trials if t.value > study.best_value]
    assert all(page.index(name) > best for name in worse)  # sorted by objective, best first
    header = page[: page.index(names[0])]
    assert all(f" {param} " in header for param in SEARCH_SPACE)  # a column per param
    assert " objective " in header and " Dataset " in header
    train = manifest_file("train", spec.data.train).sha256
    assert f"train.json ({train[:32]}) training" in page  # the manifest as a dataset, by content hash

    genai = _page_text(runs, tmp_path / "plain")  # the same page without the query: the UI's default
    assert "Overview" in genai and "Traces" in genai
