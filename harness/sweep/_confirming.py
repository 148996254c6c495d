"""The confirmation phase of a sweep (`budget.confirm`): wait for the search, queue the runs, record the decision.

Every worker of the sweep takes part: each waits until no search trial runs anywhere (the candidates are
only known then), queues what is missing (`confirmation.queue_runs`) and trains queued runs like trials;
the decision is recorded once no confirmation run is in flight. The rule itself lives in `harness.confirmation`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import optuna
from optuna.trial import TrialState

from harness.confirmation import Decision, decide, is_confirmation, queue_runs
from harness.names import DECISION_ATTR, run_name
from harness.number_text import value_text
from harness.spec import SweepSpec
from harness.sweep._recovery import owner_alive
from harness.tracking import Tracker

WAIT_SECONDS = 5.0  # how often a worker looks whether other workers' trials have ended


def running_elsewhere(study: optuna.Study, *, confirmations: bool) -> int:
    """RUNNING trials of the kind (search or confirmation) whose supervisor lives."""
    return sum(
        1
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if is_confirmation(t) == confirmations and owner_alive(t)
    )


def await_trials(study: optuna.Study, *, confirmations: bool, log: Callable[[str], None]) -> None:
    """Wait while other workers still train trials of the kind (this worker's own have ended)."""
    told = False
    while count := running_elsewhere(study, confirmations=confirmations):
        if not told:
            kind = "confirmation runs" if confirmations else "search trials"
            log(f"Waiting for {count} {kind} of other workers to end ...")
            told = True
        time.sleep(WAIT_SECONDS)


def queued_runs(study: optuna.Study) -> int:
    """Confirmation runs queued and not yet started by any worker."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)) if is_confirmation(t))


def queue(study: optuna.Study, spec: SweepSpec, log: Callable[[str], None]) -> None:
    """Queue the missing runs; a decision made before them (a resumed sweep whose candidates changed) is
    void until they end."""
    added = queue_runs(study, spec)
    if added:
        study.set_user_attr(DECISION_ATTR, None)
        confirm = spec.budget.confirm
        assert confirm is not None
        log(f"Confirming the top {confirm.top} settings with {confirm.seeds} new seeds each: {added} runs queued.")


def record_decision(
    study: optuna.Study, spec: SweepSpec, tracker: Tracker, parent_run: str, log: Callable[[str], None]
) -> Decision | None:
    """Decide, keep the decision on the study (which `study.best_trial` follows) and on the parent run."""
    decision = decide(study, spec)
    if decision is None:
        return None
    study.set_user_attr(DECISION_ATTR, decision.record())
    chosen = decision.setting
    metrics = {"confirmed_mean": chosen.mean, "confirmed_n": chosen.n, "confirmed_trial_number": chosen.best_run}
    if chosen.n > 1:
        metrics["confirmed_sd"] = chosen.sd
    if decision.low is not None and decision.high is not None:
        metrics |= {"runner_up_gap_low": decision.low, "runner_up_gap_high": decision.high}
    tracker.log_metrics(parent_run, metrics)
    tracker.set_tags(parent_run, {"harness.decision": decision.reason[:5000]})
    for setting in decision.settings:
        spread = f" ± {value_text(setting.sd)}" if setting.n > 1 else ""
        log(
            f"Setting of {run_name(setting.trial)}: mean {value_text(setting.mean)}{spread} over n={setting.n} "
            f"runs ({', '.join(value_text(v) for v in setting.values)})"
        )
    log(f"Decision: {decision.reason}; the model handed over is {run_name(chosen.best_run)}.")
    return decision
