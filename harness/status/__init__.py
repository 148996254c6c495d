"""`harness status SWEEP`: one view of a sweep running anywhere, read from its stores.

Trials by what they count as (complete, pruned, running with their last step and figure, failed, out of
memory, queued; seed-confirmation runs apart), the best so far (`harness.study.best_trial`: feasibility and
the confirmation decision respected), the budget left with an ETA from the trials' own pace, and the jobs
`harness launch` submitted with Slurm's word on them. It only reads: no lock (a sweep may hold one), no
write, no pruner, no torch; cheap enough to refresh every few seconds (`benchmarks/status.py`).

`_snapshot` reads the study into a `SweepStatus`, `_pace` estimates the end, `_jobs` asks Slurm, `_view` prints.
"""

from __future__ import annotations

from rich.console import Console

from harness.errors import StoreError
from harness.spec import SweepSpec
from harness.status._snapshot import SweepStatus, read_status
from harness.status._view import print_status, status_view, watch_status
from harness.stores import OPTUNA_STORE, store_name
from harness.sweep_lookup import read_study

__all__ = ["SweepStatus", "read_status", "show_status", "status_view"]


def show_status(spec: SweepSpec, console: Console, *, watch: float | None = None) -> None:
    """Print the sweep's status once, or every `watch` seconds until Ctrl-C (KeyboardInterrupt for the caller)."""
    study = read_study(spec.storage_url, spec.name)
    if study is None:
        raise StoreError(
            f"Sweep {spec.name!r} has no study in the {OPTUNA_STORE} {store_name(spec.storage_url)}: start it "
            f"(`harness sweep {spec.source or spec.name}`), or name the storage it runs on (`--storage`, "
            f"$HARNESS_STORAGE, `storage:` in {spec.source or 'the spec'})."
        )
    where = f"{OPTUNA_STORE} {store_name(spec.storage_url)}; MLflow {store_name(spec.tracking_uri)}"
    if watch is None:
        print_status(console, lambda: read_status(spec, study), where=where)
    else:
        watch_status(console, lambda: read_status(spec, study), where=where, seconds=watch)
