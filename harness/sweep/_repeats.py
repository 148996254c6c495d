"""Repeat proposals: params equal to an earlier finished trial's are answered from its result, not trained.

A small categorical space, a sampler that has settled, or a `start_from` entry the sampler had already
proposed all give params some trial has trained. Training them again would spend a slot on an answer the
study holds; the new trial is told the earlier trial's result instead, and it counts against the budget
(it is a decided trial: otherwise a space with few combinations would ask forever). Only COMPLETE and
PRUNED trials answer: a FAIL says nothing about its params, and out of memory may not recur on another
worker's GPU (the sampler already steers away from it). Floats compare exactly: both come from the storage.

A repeat gets no MLflow run: nothing ran, and a run of copied figures would count one measurement twice
in MLflow's comparisons. Its record names the trial whose run holds them (`TrialRecord.repeat_of`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.study import primary_value
from harness.sweep._outcomes import Outcome
from harness.trial_record import TrialRecord


def earlier_result(study: optuna.Study, params: Mapping[str, Any], number: int) -> FrozenTrial | None:
    """The first finished trial (COMPLETE, or PRUNED but not out of memory) that ran exactly `params`."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if trial.number != number and trial.params == params and not TrialRecord.of(trial).out_of_memory:
            return trial
    return None


def answer_repeat(study: optuna.Study, trial: optuna.Trial, worker: str) -> Outcome | None:
    """Tell `trial` the result of the earlier trial with its params, if there is one; None: it must train.

    A pruned one's validations are reported first, so the pruner and the sampler see the same curve."""
    earlier = earlier_result(study, trial.params, trial.number)
    if earlier is None:
        return None
    record = TrialRecord.of(earlier)
    TrialRecord.write(trial, worker=worker, repeat_of=earlier.number, final=record.final)
    if record.merge_alpha is not None:  # its figures are a merge with the pretrained model (`harness.merging`)
        TrialRecord.write(trial, merge_alpha=record.merge_alpha)
    for name, excess in earlier.constraints.items():  # a repeat of a trial that forgot too much is infeasible too
        trial.set_constraint(name, excess)
    if earlier.state == TrialState.COMPLETE:
        study.tell(trial, earlier.values)
        value = earlier.values[0] if len(earlier.values) == 1 else list(earlier.values)
        return Outcome(trial.number, TrialState.COMPLETE, value, None, None, repeat_of=earlier.number)
    if len(study.directions) == 1:  # Optuna keeps no intermediate values for multi-objective trials
        for step, value in sorted(earlier.intermediate_values.items()):
            trial.report(value, step)
    study.tell(trial, state=TrialState.PRUNED)
    reason = f"pruned at step {record.pruned_at}"
    return Outcome(trial.number, TrialState.PRUNED, primary_value(earlier), reason, None, repeat_of=earlier.number)
