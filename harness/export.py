"""`harness export <sweep>`: hand over the fine-tuned checkpoint of the best (or a chosen) trial.

The sweep keeps `model.nemo` only for the trials `training.keep_checkpoints` says to keep (by
default the best one); exporting any other trial is an error that says how to keep them all. A trial that
judged merges with the pretrained model saved its model merged at its `merge_alpha` (`harness.merging`):
the export is the model its figures were scored on.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from optuna.trial import FrozenTrial

from harness.errors import NoFeasibleTrialError, OutputError, UsageError
from harness.outputs import check_dir, make_dir
from harness.report import summarize
from harness.spec import SweepSpec
from harness.study import no_best_reason
from harness.tracking import run_name
from harness.trial_dir import TrialDir


def choose_trial(spec: SweepSpec, number: int | None) -> FrozenTrial:
    """Trial `number` of the sweep, or its best trial when `number` is None."""
    summary = summarize(spec)
    if number is None:
        if summary.best is None:
            raise NoFeasibleTrialError(
                f"Sweep {spec.name!r} has no best trial ({no_best_reason(summary.study)}); run `harness sweep "
                f"{spec.name}` until a feasible one completes, or pass `--trial N`."
            )
        return summary.best
    for trial in summary.trials:
        if trial.number == number:
            return trial
    raise UsageError(
        f"Sweep {spec.name!r} has no trial {number} (it has trials 0..{len(summary.trials) - 1}); "
        "pass one of those to `--trial`."
    )


def kept_model(spec: SweepSpec, trial: FrozenTrial) -> Path:
    """The trial's `model.nemo` in its trial folder; an error saying how to keep it when it was not kept."""
    source = TrialDir.of(spec, trial.number).model
    if not source.is_file():
        raise UsageError(
            f"{source} does not exist: the checkpoint of {run_name(trial.number)} ({trial.state.name}) was not kept "
            f"(`training.keep_checkpoints: {spec.training.keep_checkpoints}` in {spec.source or 'the sweep spec'}); "
            f"set `training.keep_checkpoints: all` to keep every trial's, or re-run it with "
            f"`harness reproduce {spec.name} --trial {trial.number}`."
        )
    return source


def export_model(spec: SweepSpec, number: int | None, out: Path) -> tuple[FrozenTrial, Path]:
    """Copy the trial's `model.nemo` to `out` (a file, or a directory to put `<sweep>-trial-NNNN.nemo` in).

    An `out` that cannot be written (a file where a folder must be) is refused before the study is read."""
    what = f"`--out {out}`"
    if not out.is_dir():
        check_dir(out.parent, what)
    trial = choose_trial(spec, number)
    source = kept_model(spec, trial)
    target = out / f"{spec.name}-{run_name(trial.number)}.nemo" if out.is_dir() else out
    make_dir(target.parent, what)
    try:
        shutil.copyfile(source, target)
    except OSError as exc:
        raise OutputError(
            f"Cannot write {what}: copying to {target} failed ({exc.strerror or exc}); choose another path, or "
            "free space or permissions there."
        ) from None
    return trial, target
