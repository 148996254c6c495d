"""The seed-confirmation section: each confirmed setting's mean ± sd over n runs, and how sure the choice is.

One run's figure is one sample, and the search's best is the minimum of several, so biased low; the
section puts the confirmed means beside it and names which figure each statement uses.
"""

from __future__ import annotations

from harness.confirmation import Decision
from harness.names import run_name
from harness.number_text import number_text
from harness.report._blocks import Block, Heading, Table, Text
from harness.report._summary import SweepSummary
from harness.search_space import format_param
from harness.spec import SweepSpec

CONFIRMATION_HEADERS = ["setting of", "params", "n", "mean ± sd", "runs", "chosen"]


def decision_text(spec: SweepSpec, summary: SweepSummary) -> str | None:
    """The decision's lead sentence when seed confirmation decided it; None otherwise."""
    decision = Decision.read(summary.study)
    if decision is None:
        return None
    chosen = decision.setting
    return (
        f"Fine-tune `{spec.model}` with the setting of {run_name(chosen.trial)}, confirmed over n={chosen.n} "
        f"training seeds (mean {spec.objective.metric} {_mean_sd(chosen.mean, chosen.sd, chosen.n)}). The model "
        f"handed over (test set, export, reproduce) is {run_name(chosen.best_run)}, its best confirmation run."
    )


def confirmation_blocks(spec: SweepSpec, summary: SweepSummary) -> list[Block]:
    decision = Decision.read(summary.study)
    if decision is None:
        if spec.budget.confirm is None:
            return []
        return [Heading("Seed confirmation"), Text("Not decided yet: the confirmation runs have not all ended.")]
    rows = [
        [
            run_name(s.trial),
            ", ".join(f"{k}={format_param(v)}" for k, v in s.params.items()),
            str(s.n),
            _mean_sd(s.mean, s.sd, s.n),
            ", ".join(f"{run_name(r)} {number_text(v)}" for r, v in zip(s.runs, s.values, strict=True)),
            "yes" if s.trial == decision.chosen else "",
        ]
        for s in decision.settings
    ]
    return [
        Heading("Seed confirmation"),
        Text(
            f"The top {len(decision.settings)} distinct settings of the search each trained again with new training "
            f"seeds, full length and unpruned; each row's mean is over its complete runs, the search run included "
            f"(objective {spec.objective.metric} at the final validation)."
        ),
        Table(CONFIRMATION_HEADERS, rows),
        Text(f"{decision.reason[0].upper()}{decision.reason[1:]}. {_gap_text(decision)}"),
        Text(
            "The search's best single run is the minimum of several noisy runs, so its figure is biased low; the "
            "decision uses the means above, and the test set scores the model handed over on data no choice was "
            "made on."
        ),
    ]


def _gap_text(decision: Decision) -> str:
    if decision.low is None or decision.high is None:
        if len(decision.settings) < 2:
            return "With one setting there is no runner-up to compare."
        return "A setting with one complete run has no spread to compare: the settings cannot be told apart."
    runner_up = decision.settings[1]
    interval = f"[{number_text(decision.low)}, {number_text(decision.high)}]"
    doubt = "includes 0: not separable" if decision.low <= 0 <= decision.high else "excludes 0"
    return (
        f"The runner-up ({run_name(runner_up.trial)}'s setting) is worse by {interval} (95% Welch t-interval over the "
        f"runs' seeds, {doubt}); with two or three runs per setting it is wide, as it should be."
    )


def _mean_sd(mean: float, sd: float, n: int) -> str:
    return f"{number_text(mean)} ± {number_text(sd)}" if n > 1 else f"{number_text(mean)} (n=1)"
