"""A sweep's stores: its Optuna study and its MLflow parent run, opened together and checked to belong.

The link is the study's uid (recorded with the study, tagged on the parent run) and the parent
run id the study records. A recreated store breaks it, and that is reported with both stores
named, never merged: a deleted `mlflow.db` leaves a study whose trials' runs are gone (a new
parent run would silently drop them), a deleted `optuna.db` a new study that would file its
trials under the old study's parent run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution

from harness.definition import check_study, study_uid
from harness.directions import Direction
from harness.errors import StoreError
from harness.names import PARENT_ATTR
from harness.pruners import make_pruner
from harness.spec import SweepSpec
from harness.stores import check_state_dir, ensure_state_dir, sqlite_path, store_name
from harness.study import find_study, open_study
from harness.system_metrics import PEAK_GPU, PEAK_RSS
from harness.tracking import UID_TAG, Tracker, runs_view_key
from harness.trial_record import TrialRecord

# The runs table's metric columns beside the trial's params: the decision, the figures, what fitted.
VIEW_METRICS = ("objective", "final_val_wer", "final_val_wer_normalized", "final_val_bleu", PEAK_GPU, PEAK_RSS)


@dataclass
class SweepStores:
    """The opened stores of one sweep and the parent run that links them."""

    study: optuna.Study
    tracker: Tracker
    parent_run: str


def check_sweep_stores(spec: SweepSpec, space: dict[str, BaseDistribution]) -> None:
    """Read-only: stores reachable and sane, spec matching the study, study and parent run linked.

    Cheap, so the supervisor runs it before fetching the model and checking the data; nothing is
    created, so a mismatch leaves both stores as they were.
    """
    check_state_dir(spec.state_dir)
    study = find_study(spec)
    if study is not None:
        check_study(spec, study, space, adopt=False)
    path = sqlite_path(spec.tracking_uri)
    tracker = None
    if path is None or path.is_file():
        tracker = Tracker(spec.tracking_uri, spec.experiment_name, create=False)
    _linked_parent(spec, study, tracker, adopt=False)


def open_sweep_stores(
    spec: SweepSpec, space: dict[str, BaseDistribution], *, params: dict[str, Any], tags: dict[str, str]
) -> SweepStores:
    """Create or resume the study and its parent run; both stores exist before any trial process starts.

    The read-only check runs first, so a mismatch creates nothing in either store."""
    check_sweep_stores(spec, space)
    ensure_state_dir(spec.state_dir)
    study = open_study(spec, space, pruner=make_pruner(spec))
    tracker = Tracker(spec.tracking_uri, spec.experiment_name, artifact_root=spec.state_dir / "artifacts")
    parent = _linked_parent(spec, study, tracker, adopt=True)
    if parent is None:
        uid = study_uid(study)
        assert uid is not None, "open_study records the definition, uid included"
        parent = tracker.parent_run(sweep=spec.name, study_uid=uid, params=params, tags=tags)
    study.set_user_attr(PARENT_ATTR, parent)
    tracker.save_runs_view(
        runs_view_key(spec.name),
        params=list(space),
        metrics=VIEW_METRICS,
        order_by="objective",
        ascending=spec.direction is Direction.MINIMIZE,
    )
    return SweepStores(study, tracker, parent)


def _linked_parent(spec: SweepSpec, study: optuna.Study | None, tracker: Tracker | None, *, adopt: bool) -> str | None:
    """The study's parent run, None if it has none yet; an error if the stores do not belong together."""
    uid = study_uid(study) if study is not None else None
    if study is not None and uid and tracker is not None:
        found = tracker.parents(study_uid=uid)
        if found:
            return found[0].info.run_id
    recorded = study.user_attrs.get(PARENT_ATTR) if study is not None else None
    tracked = study is not None and any(
        TrialRecord.of(t).mlflow_run_id is not None for t in study.get_trials(deepcopy=False)
    )
    if recorded or tracked:
        # A study made by an older harness links by run id only: its parent run is adopted.
        run = tracker.sweep_run(recorded) if tracker is not None and recorded else None
        if run is not None and run.data.tags.get(UID_TAG) in (None, uid):
            if adopt and uid and tracker is not None and recorded:
                tracker.set_tags(recorded, {UID_TAG: uid})
            return recorded
        assert study is not None  # `recorded` and `tracked` come from the study
        raise StoreError(_lost_runs(spec, study, recorded))
    others = [r for r in (tracker.parents(sweep=spec.name) if tracker else []) if r.data.tags.get(UID_TAG) != uid]
    if others:
        raise StoreError(_lost_study(spec, others[0].info.run_id, exists=study is not None))
    return None


def _lost_runs(spec: SweepSpec, study: optuna.Study, recorded: str | None) -> str:
    """The MLflow side is gone (mlflow.db deleted or replaced, or tracking pointed elsewhere)."""
    count = len(study.get_trials(deepcopy=False))
    run = f"parent run {recorded}" if recorded else "its trials' runs"
    return (
        f"Sweep {spec.name!r}: its Optuna study in {store_name(spec.storage_url)} ({count} trials) is tracked in "
        f"MLflow {run}, which experiment {spec.experiment_name!r} in {store_name(spec.tracking_uri)} does not "
        "have (was the MLflow store deleted or replaced, or `tracking` changed?). Restore that MLflow store, or "
        "point `tracking.uri`/`tracking.experiment` back at it, to resume; or start a new sweep under a new name."
    )


def _lost_study(spec: SweepSpec, run_id: str, *, exists: bool) -> str:
    """The Optuna side is new (optuna.db deleted or replaced, or storage pointed elsewhere)."""
    ours = "holds a different study" if exists else "has no study of that name"
    return (
        f"Sweep {spec.name!r}: experiment {spec.experiment_name!r} in {store_name(spec.tracking_uri)} holds the "
        f"parent run {run_id} of an earlier study of this sweep, but the Optuna storage "
        f"{store_name(spec.storage_url)} {ours} (was it deleted or replaced, or `storage` changed?). Restore "
        "that Optuna storage, or point `storage` back at it, to resume; to start over instead, use a new sweep "
        f"name or set `tracking.experiment` in {spec.source or 'the sweep spec'} to a new experiment."
    )
