"""MLflow glue: one parent run per sweep, one child run `trial-0007` per trial.

The harness owns this instead of NeMo's exp_manager switch (broken in NeMo 3.0) or Optuna's
deprecated MLflowCallback (no parent run, no curves). Every call passes the tracking URI
explicitly; the supervisor creates the store before any trial process starts, so fresh SQLite
schemas never race.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from harness.search_space import format_param

PARENT_ROLE = "sweep"
TRIAL_ROLE = "trial"
BASELINE_ROLE = "baseline"
REPRODUCTION_ROLE = "reproduction"


def run_name(number: int) -> str:
    return f"trial-{number:04d}"


def git_commit() -> str | None:
    """The harness checkout's commit; MLflow's own guess uses sys.argv[0], the console script."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


class Tracker:
    """A handle on one sweep's MLflow experiment."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path | None = None) -> None:
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment_id = self._ensure_experiment(experiment, artifact_root)

    def _ensure_experiment(self, name: str, artifact_root: Path | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if artifact_root is not None and self.uri.startswith("sqlite:"):
            location = (artifact_root / name).resolve().as_uri()  # next to the DB, not ./mlruns of the CWD
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException as exc:  # another worker created it at the same instant
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return self.client.get_experiment_by_name(name).experiment_id

    def parent_run(self, *, sweep: str, study_key: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        """The sweep's parent run: found by its study key (resume, other workers) or created.

        Workers that start together may each create one; all of them then agree on the oldest
        and delete their own duplicate, so a sweep always has exactly one parent run.
        """
        found = self._parents(study_key)
        if found:
            return found[0]
        all_tags = {"harness.role": PARENT_ROLE, "harness.sweep": sweep, "harness.study_key": study_key, **tags}
        commit = git_commit()
        if commit:
            all_tags["mlflow.source.git.commit"] = commit
        mine = self.client.create_run(self.experiment_id, run_name=sweep, tags=all_tags).info.run_id
        winner = self._parents(study_key)[0]
        if winner != mine:
            self.client.delete_run(mine)
            return winner
        self.log_params(mine, params)
        return mine

    def _parents(self, study_key: str) -> list[str]:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`harness.study_key` = '{study_key}' and tags.`harness.role` = '{PARENT_ROLE}'",
            order_by=["attributes.start_time ASC"],
        )
        return [r.info.run_id for r in sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))]

    def child_run(
        self, parent_id: str, *, name: str, role: str, params: Mapping[str, Any], tags: Mapping[str, str]
    ) -> str:
        """A trial (or baseline) run nested under the sweep's parent run."""
        all_tags = {"mlflow.parentRunId": parent_id, "harness.role": role, **tags}
        commit = git_commit()
        if commit:
            all_tags["mlflow.source.git.commit"] = commit
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        for key, value in params.items():
            self.client.log_param(run_id, key, format_param(value))

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        for key, value in metrics.items():
            if value is not None and not math.isnan(value):
                self.client.log_metric(run_id, key, float(value), step=step)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)

    def end_run(self, run_id: str, status: str) -> None:
        """status: FINISHED, KILLED (pruned or interrupted) or FAILED."""
        if status not in ("FINISHED", "KILLED", "FAILED"):
            raise ValueError(f"unknown run status {status!r}")
        self.client.set_terminated(run_id, status)

    def children(self, parent_id: str) -> list:
        return self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'", max_results=5000
        )
