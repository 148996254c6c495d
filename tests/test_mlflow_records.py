"""The MLflow record a sweep leaves is a contract: users' dashboards, queries and `search_runs` filters
read its param, metric and tag names. This test pins them for a demo-shaped sweep (baseline, trials,
test set), so a refactor that renames or drops one fails here; a deliberate change updates
tests/expected/mlflow_records.json (`HARNESS_UPDATE_RECORDS=1 pytest tests/test_mlflow_records.py`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mlflow.tracking import MlflowClient

EXPECTED = Path(__file__).parent / "expected" / "mlflow_records.json"
# Names that differ by machine, not by harness version: system metrics (GPU ones only where a GPU is),
# and MLflow's own bookkeeping tags.
MACHINE_PREFIXES = ("system/", "mlflow.source.", "mlflow.user")


def _names(keys) -> list[str]:
    return sorted(k for k in keys if not k.startswith(MACHINE_PREFIXES))


def _record_names(client: MlflowClient, experiment_id: str) -> dict:
    """Per run role (sweep, baseline, trial): the union of param, metric and tag names over its runs."""
    record: dict[str, dict[str, set]] = {}
    for run in client.search_runs([experiment_id], max_results=1000):
        role = run.data.tags.get("harness.role", "?")
        names = record.setdefault(role, {"params": set(), "metrics": set(), "tags": set()})
        names["params"] |= set(run.data.params)
        names["metrics"] |= set(run.data.metrics)
        names["tags"] |= set(run.data.tags)
    return {role: {kind: _names(keys) for kind, keys in kinds.items()} for role, kinds in sorted(record.items())}


def test_the_mlflow_record_of_a_sweep_keeps_its_names(report_sweep, monkeypatch):
    spec = report_sweep.enter(monkeypatch)
    client = MlflowClient(report_sweep.uri)
    experiment = client.get_experiment_by_name(spec.experiment_name)
    found = _record_names(client, experiment.experiment_id)
    if os.environ.get("HARNESS_UPDATE_RECORDS"):
        EXPECTED.parent.mkdir(exist_ok=True)
        EXPECTED.write_text(json.dumps(found, indent=1) + "\n")
    expected = json.loads(EXPECTED.read_text())
    assert set(found) == set(expected), "run roles changed"
    for role, kinds in expected.items():
        for kind, names in kinds.items():
            missing = sorted(set(names) - set(found[role][kind]))
            added = sorted(set(found[role][kind]) - set(names))
            assert not missing and not added, f"{role} run {kind}: missing {missing}, new {added}"
