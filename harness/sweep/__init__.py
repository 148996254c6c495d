"""The sweep supervisor: ask Optuna, run each trial in its own process, record the outcome.

Callers import from here; the private modules are one concern each: `_supervisor` (the loop),
`_process` (launching and watching a trial process), `_outcomes` (recording an outcome: complete,
pruned, failed, re-queued), `_recovery` (trials whose supervisor died), `_evaluations` (baseline,
test set, reproduction), `_checkpoints` (which checkpoints stay),
`_console` (what it says while it runs, the parent run's params), `_reproduce` (the `harness reproduce` view),
`_repeats` (proposals that repeat a finished trial, answered from its result).
"""

from harness.sweep._outcomes import Outcome
from harness.sweep._process import trial_result
from harness.sweep._repeats import answer_repeat
from harness.sweep._reproduce import reproduce_trial
from harness.sweep._supervisor import Supervisor

__all__ = ["Outcome", "Supervisor", "answer_repeat", "reproduce_trial", "trial_result"]
