"""Checkpoint retention: which fine-tuned `.nemo` files stay in the trial dirs (`training.keep_checkpoints`).

A 1B checkpoint is gigabytes; `best` keeps only the best trial's (the Pareto front's for `pareto`),
`all` keeps every complete trial's, `none` keeps nothing (trials then skip saving one). With `budget.confirm`,
every confirmation run's stays until the decision is made (`harness.confirmation`).
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from harness.confirmation import is_confirmation
from harness.names import DECISION_ATTR
from harness.spec import SweepSpec
from harness.study import best_trial
from harness.trial_dir import TrialDir


def retain_checkpoints(spec: SweepSpec, study: optuna.Study) -> None:
    """Delete the checkpoints the policy does not keep."""
    if spec.training.keep_checkpoints == "all":
        return
    keep = set()
    best = best_trial(study)
    if spec.training.keep_checkpoints == "best" and best is not None:
        front = study.best_trials if spec.multi_objective else [best]
        keep = {t.number for t in front}
    if spec.budget.confirm is not None and not study.user_attrs.get(DECISION_ATTR):
        # Until the confirmed decision is made, any confirmation run may become the model handed over.
        keep |= {t.number for t in study.get_trials(deepcopy=False) if is_confirmation(t)}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.number not in keep:
            TrialDir.of(spec, t.number).model.unlink(missing_ok=True)
