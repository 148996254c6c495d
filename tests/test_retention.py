"""Retention sets: a real fine-tune that forgets more of the twin's old domain than the limit allows is
infeasible in Optuna, never the best trial, and named so in the console and the report."""

import pytest
from optuna.trial import TrialState

from harness.cli import main
from harness.errors import NoFeasibleTrialError
from harness.export import choose_trial
from harness.report import report_dir
from harness.retention import forgets_text, wer_increase
from harness.spec import load_spec
from harness.study import RETENTION_CONSTRAINT, best_trial
from harness.trial_record import TrialRecord
from tests.conftest import spec_dict, write_spec
from tests.helpers import load_study

# No forgetting allowed (a negative limit is refused on load); the trial starts from the space's highest
# learning rate, whose 20 steps on the new domain raise the twin's retention WER (checked below).
IMPOSSIBLE = 0.0
FORGETFUL = {"lr": 3e-3, "batch_duration": 20, "freeze": "none", "use_loss_mask_for_prompt": True}


# ~50 s end to end: `make test-extended` (the shared sweep keeps a limit every trial meets in `make test`)
@pytest.mark.extended
def test_a_trial_over_the_retention_limit_is_infeasible_and_never_the_best(
    project, speech_data, retention_data, capsys
):
    spec = load_spec(
        write_spec(
            project,
            "forgets",
            spec_dict(
                speech_data,
                data={"retention": str(retention_data)},  # one path, not a list
                budget={"trials": 1, "baseline": True},
                objective={"retention_max_wer_increase": IMPOSSIBLE},
                start_from=[FORGETFUL],
            ),
        )
    )
    assert main(["sweep", "forgets"]) == 1  # no best trial: an error, after the report
    out = " ".join(capsys.readouterr().out.split())
    study = load_study(spec)

    (trial,) = study.get_trials()
    final, baseline = TrialRecord.of(trial).final, study.user_attrs["baseline"]
    increase = final["retention_wer"] - baseline["retention_wer"]
    assert increase > IMPOSSIBLE, "the fine-tune kept the old domain: this test needs one that forgets"
    assert trial.state == TrialState.COMPLETE  # it trained to the end: its value is real, its params refused
    assert trial.constraints == {RETENTION_CONSTRAINT: pytest.approx(increase - IMPOSSIBLE)}
    assert best_trial(study) is None
    assert f"trial-0000 {forgets_text(increase, IMPOSSIBLE)}" in out
    assert "No best trial: no feasible trial: all 1 complete trials" in out
    assert (
        "error: the sweep ended with no feasible trial: all 1 complete trials break a constraint "
        "(retention_wer_increase); each trial's note above says by how much." in out
    )
    page = (report_dir(spec) / "report.md").read_text()
    assert (
        "Nothing to recommend: no feasible trial: all 1 complete trials break a constraint (retention_wer_increase)"
        in page
    )
    assert forgets_text(increase, IMPOSSIBLE) in page  # the trial's note in the table
    assert "retention change" in page and f"{increase:+.4f}" in page  # the trials table's columns
    assert "## Retention: the model's old domain" in page
    assert (spec.state_dir / "reports" / "forgets" / "plots" / "retention_tradeoff.png").is_file()
    with pytest.raises(NoFeasibleTrialError, match=r"has no best trial \(no feasible trial: all 1 complete trials"):
        choose_trial(spec, None)


def test_retention_increase_needs_both_figures():
    assert wer_increase({"retention_wer": 0.3}, {"retention_wer": 0.1}) == pytest.approx(0.2)
    assert wer_increase({"retention_wer": 0.3}, None) is None  # no baseline yet
    assert wer_increase({"retention_bleu": 0.3}, {"retention_wer": 0.1}) is None  # a translation-only set
    assert forgets_text(0.12, 0.05) == "forgets: retention WER +0.1200 > 0.05"
