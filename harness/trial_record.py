"""What the harness records on each Optuna trial, as one typed record with one reader and one writer.

A trial's record lives in its Optuna `user_attrs`: who runs it (seed, host, pid, worker,
heartbeat, trial_pid), its MLflow run, how it ended (final metrics, steps, pruned_at,
fail_reason, requeued; the `merge_alpha` its model was merged at and every judged alpha's figures,
`merges`), whose retry it is (retry_of, attempt), which `start_from` entry gave its
params, whose result answered it (repeat_of), which setting it confirms (confirms), and what its
figures depend on (numerics: threads, device, precision, determinism, versions). Every read goes through
`TrialRecord.of` and every write through `TrialRecord.write` (or `TrialRecord.attrs` for a trial
not created yet), because a bare-string key spelt wrong in one place silently loses a record:
the writer stores under a name nobody reads, the reader finds nothing and falls back to its
default. Here a misspelt key is a `TypeError` at the call. The stored keys and values are the
ones the harness always wrote, so existing studies read the same.

Study-level attrs (baseline, test, parent run, definition) are not trial records; their owners
keep them (`sweep.py`, `sweep_stores.py`, `definition.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import optuna
from optuna.trial import FrozenTrial

OOM = "oom"  # the fail_reason of a trial that ran out of accelerator memory (an infeasible point, not a crash)


@dataclass(frozen=True)
class TrialRecord:
    """One trial's harness record, read from its Optuna user attrs; a key never written reads as its default.

    Values are converted to the field's type on reading (`seed` stored as 7.0 reads as 7); the
    writer stores exactly the values it is given. Keys the harness does not know are ignored.

    Example:
        >>> study = optuna.create_study()
        >>> trial = study.ask()
        >>> TrialRecord.write(trial, seed=7, fail_reason="oom")
        >>> record = TrialRecord.of(trial)
        >>> record.seed, record.fail_reason, record.attempt
        (7, 'oom', 0)
    """

    seed: int | None = None  # the training seed the trial process got
    host: str | None = None  # the supervisor's host
    pid: int | None = None  # the supervisor's pid on that host
    worker: str | None = None  # the supervisor as `host:pid`
    heartbeat: float | None = None  # time.time() of the supervisor's last sign of life
    mlflow_run_id: str | None = None  # the trial's MLflow child run
    trial_pid: int | None = None  # the trial process
    final: dict[str, float] = field(default_factory=dict)  # final validation metrics (no `step`)
    steps: int | None = None  # optimizer steps trained
    pruned_at: int | None = None  # the step Optuna pruned it at
    fail_reason: str | None = None  # why it failed (`oom`, `killed`, `terminated`, ...)
    requeued: bool = False  # a failure re-queued with the same params (it does not use the budget)
    retry_of: int | None = None  # the number of the failed trial this one retries
    attempt: int = 0  # 0 for a first try, n for the n-th retry
    start_from: int | None = None  # its params came from the sweep's `start_from` list, at this index
    repeat_of: int | None = None  # the finished trial with the same params whose result it was told (none trained)
    confirms: int | None = None  # a seed-confirmation run of the setting of this search trial (`confirmation`)
    numerics: dict[str, Any] = field(default_factory=dict)  # what its figures depend on (`harness.numerics`)
    merge_alpha: float | None = None  # its model and `final` are this merge with the pretrained one (`harness.merging`)
    merges: dict[str, dict[str, float]] = field(default_factory=dict)  # every judged alpha ("0.5") -> its figures

    @classmethod
    def of(cls, trial: FrozenTrial | optuna.Trial) -> TrialRecord:
        """The reader: the record of `trial` (a snapshot; a live trial's later writes are not seen)."""
        attrs = trial.user_attrs
        return cls(
            seed=_maybe(int, attrs.get("seed")),
            host=_maybe(str, attrs.get("host")),
            pid=_maybe(int, attrs.get("pid")),
            worker=_maybe(str, attrs.get("worker")),
            heartbeat=_maybe(float, attrs.get("heartbeat")),
            mlflow_run_id=_maybe(str, attrs.get("mlflow_run_id")),
            trial_pid=_maybe(int, attrs.get("trial_pid")),
            final=dict(attrs.get("final") or {}),
            steps=_maybe(int, attrs.get("steps")),
            pruned_at=_maybe(int, attrs.get("pruned_at")),
            fail_reason=_maybe(str, attrs.get("fail_reason")),
            requeued=bool(attrs.get("requeued", False)),
            retry_of=_maybe(int, attrs.get("retry_of")),
            attempt=int(attrs.get("attempt") or 0),
            start_from=_maybe(int, attrs.get("start_from")),
            repeat_of=_maybe(int, attrs.get("repeat_of")),
            confirms=_maybe(int, attrs.get("confirms")),
            numerics=dict(attrs.get("numerics") or {}),
            merge_alpha=_maybe(float, attrs.get("merge_alpha")),
            merges={str(k): dict(v) for k, v in (attrs.get("merges") or {}).items()},
        )

    @property
    def out_of_memory(self) -> bool:
        """It ran out of memory: Optuna holds it PRUNED and infeasible (see `harness.study.tell_out_of_memory`),
        older harnesses FAIL; either way its params did not fit, whatever its Optuna state says."""
        return self.fail_reason == OOM

    @classmethod
    def attrs(cls, **values: Any) -> dict[str, Any]:
        """The user attrs that store `values` (keyword names are the fields), e.g. for `enqueue_trial`."""
        cls(**values)  # a key that is not a field raises TypeError here, before anything is stored
        return dict(values)

    @classmethod
    def write(cls, trial: optuna.Trial, **values: Any) -> None:
        """The writer: store `values` (keyword names are the fields) on the live `trial`, each under its
        field's name (its `user_attrs` then show them)."""
        for key, value in cls.attrs(**values).items():
            trial.set_user_attr(key, value)


KEYS = tuple(f.name for f in fields(TrialRecord))  # the user-attr keys of a trial record


def model_params(trial: FrozenTrial | optuna.Trial) -> dict[str, Any]:
    """The params of the model a trial hands over: its sampled params, and the `merge_alpha` it was merged at,
    judged after training rather than sampled, so a user attr and not an Optuna param (the report, `best.yaml`,
    MLflow and `harness reproduce` show it as one). Seed confirmation groups settings by the sampled params alone:
    the alpha is an outcome of each run."""
    alpha = TrialRecord.of(trial).merge_alpha
    return dict(trial.params) | ({"merge_alpha": alpha} if alpha is not None else {})


def _maybe(kind: type, value: Any) -> Any:
    return None if value is None else kind(value)
