"""MLflow glue: one parent run per sweep, one child run `trial-0007` per trial.

The harness owns this instead of NeMo's exp_manager switch (broken in NeMo 3.0) or Optuna's
deprecated MLflowCallback (no parent run, no curves). Every call passes the tracking URI
explicitly. The parent run carries its study's uid (harness.definition), so a study made afresh
in a recreated database never takes over the parent run of the study it replaced.

The experiment is marked as model training (`mlflow.experimentKind`), each run names the manifests
it read as MLflow datasets (by content hash, as the report's provenance does), and the sweep saves
a runs-table view (params and summary metrics as columns, best first) that `runs_link` opens: the
MLflow 3 UI otherwise opens an experiment on its GenAI pages, with child runs folded under the
parent run and no param or metric columns.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag, Run
from mlflow.exceptions import MlflowException

from harness.checkout import git_commit
from harness.names import run_name  # noqa: F401 (re-exported: callers name runs through tracking)
from harness.provenance import InputFile, manifest_file
from harness.search_space import format_param
from harness.stores import MLFLOW_STORE, TRACKING_SETTING, open_mlflow, reported

UID_TAG = "harness.study_uid"
# Read by MLflow 3 UIs that lay an experiment out by kind (3.17's own UI goes by `workflowType` instead).
KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
VIEW_TAG = "mlflow.sharedViewState."  # + key: a runs-table view the UI opens from `viewStateShareKey=key`
CONTEXT_TAG, SHA256_TAG = "mlflow.data.context", "manifest_sha256"
DIGEST_CHARS = 32  # the tracking server refuses dataset digests over 36 characters
PARENT_ROLE = "sweep"
TRIAL_ROLE = "trial"
BASELINE_ROLE = "baseline"
REPRODUCTION_ROLE = "reproduction"


class Tracker:
    """A handle on one sweep's MLflow experiment; `create=False` only looks (its id may then be None)."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path | None = None, *, create: bool = True) -> None:
        self.uri = uri
        self.client = open_mlflow(uri)
        with reported(MLFLOW_STORE, uri, TRACKING_SETTING):
            if create:
                self.experiment_id: str | None = self._ensure_experiment(experiment, artifact_root)
            else:
                found = self.client.get_experiment_by_name(experiment)
                self.experiment_id = found.experiment_id if found is not None else None
        self._manifests: dict[tuple, InputFile] = {}  # by (path, size, mtime): hashed once per process

    def _ensure_experiment(self, name: str, artifact_root: Path | None) -> str:
        """Found or created, and marked as model training (an experiment of an older harness gets the tag;
        a kind someone set by hand is kept)."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if KIND_TAG not in found.tags:
                self.client.set_experiment_tag(found.experiment_id, KIND_TAG, MODEL_TRAINING)
            return found.experiment_id
        location = None
        if artifact_root is not None and self.uri.startswith("sqlite:"):
            location = (artifact_root / name).resolve().as_uri()  # next to the DB, not ./mlruns of the CWD
        try:
            return self.client.create_experiment(name, artifact_location=location, tags={KIND_TAG: MODEL_TRAINING})
        except MlflowException as exc:  # another worker created it at the same instant
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return self.client.get_experiment_by_name(name).experiment_id

    def save_runs_view(
        self, key: str, *, params: Sequence[str], metrics: Sequence[str], order_by: str, ascending: bool
    ) -> None:
        """The runs table `runs_link(..., key)` opens: the datasets, `params` and `metrics` as columns, runs
        sorted by metric `order_by` (a sorted table lists child runs flat, not folded under the parent run).
        The UI's own "share view" button stores the same JSON in the same experiment tag."""
        columns = ["attributes.`Dataset`", *(f"params.`{p}`" for p in params), *(f"metrics.`{m}`" for m in metrics)]
        view = {"orderByKey": f"metrics.`{order_by}`", "orderByAsc": ascending, "selectedColumns": columns}
        self.client.set_experiment_tag(self.experiment_id, VIEW_TAG + key, json.dumps(view))

    def has_runs_view(self, key: str) -> bool:
        """Whether `save_runs_view(key)` ran on this experiment (a sweep of an older harness has none)."""
        if self.experiment_id is None:
            return False
        return VIEW_TAG + key in self.client.get_experiment(self.experiment_id).tags

    def parent_run(self, *, sweep: str, study_uid: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        """The parent run of the study `study_uid`: found (resume, other workers) or created.

        Workers that start together may each create one; all of them then agree on the oldest
        and delete their own duplicate, so a sweep always has exactly one parent run.
        """
        found = self.parents(study_uid=study_uid)
        if found:
            return found[0].info.run_id
        all_tags = {"harness.role": PARENT_ROLE, "harness.sweep": sweep, UID_TAG: study_uid, **tags}
        commit = git_commit()
        if commit:
            all_tags["mlflow.source.git.commit"] = commit
        mine = self.client.create_run(self.experiment_id, run_name=sweep, tags=all_tags).info.run_id
        winner = self.parents(study_uid=study_uid)[0].info.run_id
        if winner != mine:
            self.client.delete_run(mine)
            return winner
        self.log_params(mine, params)
        return mine

    def parents(self, *, study_uid: str | None = None, sweep: str | None = None) -> list[Run]:
        """Active parent runs in this experiment, oldest first: of one study (uid) or of one sweep name."""
        if self.experiment_id is None:
            return []
        query = f"tags.`harness.role` = '{PARENT_ROLE}'"
        if study_uid is not None:
            query += f" and tags.`{UID_TAG}` = '{study_uid}'"
        runs = self.client.search_runs([self.experiment_id], filter_string=query, max_results=5000)
        runs = [r for r in runs if sweep is None or r.data.tags.get("harness.sweep") == sweep]
        return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))

    def sweep_run(self, run_id: str) -> Run | None:
        """Run `run_id` if it is an active parent run in this experiment (a recorded link still holds)."""
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return None
        if run.info.experiment_id != self.experiment_id or run.info.lifecycle_stage != "active":
            return None
        return run if run.data.tags.get("harness.role") == PARENT_ROLE else None

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

    def log_manifests(
        self,
        run_id: str,
        manifests: Mapping[str, str | Path | Sequence[str | Path] | None],
        audio_cache: Path | None = None,
    ) -> None:
        """The manifests a run read, as MLflow datasets: `{"training": path, "retention": [path, ...]}` (context
        -> manifest or manifests; None skipped). Digests are the provenance content hash (audio bytes and
        fields, not paths), so the UI shows the same data as the same dataset wherever it was copied; the full
        sha256 is the input's `manifest_sha256` tag. `audio_cache` is provenance's audio-hash cache."""
        inputs = []
        for context, given in manifests.items():
            paths: list[str | Path] = [given] if isinstance(given, (str, Path)) else list(given or [])
            for path in (p for p in paths if p):
                record = self._manifest_file(Path(path), audio_cache)
                if record.sha256 is not None:  # a missing file is preflight's to report
                    inputs.append(_dataset_input(context, record, record.sha256))
        if inputs:
            self.client.log_inputs(run_id, datasets=inputs)

    def _manifest_file(self, path: Path, audio_cache: Path | None) -> InputFile:
        """provenance.manifest_file, once per manifest version in this process (every trial logs the same files)."""
        stat = path.stat() if path.is_file() else None
        key = (str(path.resolve()), *((stat.st_size, stat.st_mtime_ns) if stat else ()))
        if key not in self._manifests:
            self._manifests[key] = manifest_file(path.stem, str(path), audio_cache)
        return self._manifests[key]

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """MLflow's SQL store sets a tag by reading, then inserting: two workers setting the same tag of the parent
        run at once (the best trial at a shared sweep's end) can both insert, and the second fails on the unique
        key. Retried once, it finds the tag and updates it."""
        for key, value in tags.items():
            try:
                self.client.set_tag(run_id, key, value)
            except MlflowException as exc:
                if not re.search(r"UNIQUE constraint|duplicate key|IntegrityError", str(exc)):
                    raise
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


def _dataset_input(context: str, record: InputFile, sha256: str) -> DatasetInput:
    """One manifest as a dataset input: named by its file, found at its path, `num_rows` its lines."""
    path = Path(record.path)
    dataset = Dataset(
        name=path.name,
        digest=sha256[:DIGEST_CHARS],
        source_type="local",
        source=json.dumps({"uri": path.as_uri()}),
        schema=None,
        profile=json.dumps({"num_rows": record.lines, "audio_hours": round(record.hours or 0.0, 4)}),
    )
    return DatasetInput(dataset=dataset, tags=[InputTag(CONTEXT_TAG, context), InputTag(SHA256_TAG, sha256)])


def runs_view_key(sweep: str) -> str:
    """A sweep's runs-view key: its name in the characters MLflow tag keys and URLs take as they are."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", sweep)


def runs_link(ui_url: str, experiment_id: str | None, view: str | None = None) -> str:
    """The experiment's runs table in the MLflow UI at `ui_url`. `workflowType=machine_learning` picks the
    UI's model-training layout (its default, `genai`, opens traces); `view` a key of `save_runs_view`."""
    base = ui_url.rstrip("/") + "/#/experiments"
    query = "workflowType=machine_learning" + (f"&viewStateShareKey={view}" if view else "")
    return f"{base}/{experiment_id}/runs?{query}" if experiment_id else f"{base}?{query}"
