"""The live sweep view: counts, best so far, each running trial's step and metrics, ETA."""

import io

from rich.console import Console

from harness.progress import SweepView, read_progress, write_progress
from harness.trial_dir import TrialDir


def test_live_view_shows_running_trials_and_eta(tmp_path):
    trial_dir = TrialDir(tmp_path / "trial-0003")
    trial_dir.path.mkdir()
    write_progress(trial_dir, 50, 200, {"val_wer": 0.25})
    assert read_progress(trial_dir) == {"step": 50, "max_steps": 200, "metrics": {"val_wer": 0.25}}
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160)
    with SweepView(console, name="demo", budget=6) as view:
        view.trial_finished(60.0)
        view.trial_finished(120.0)
        assert view.eta_seconds(done=2, slots=2) == 4 * 90.0 / 2
        view.refresh(
            {"done": 2, "running": 1, "pruned": 1, "failed": 0},
            "trial-0001 = 0.3000",
            [("trial-0003", trial_dir)],
            slots=2,
        )
    text = out.getvalue()
    assert "demo: 2/6 done, 1 running, 1 pruned, 0 failed; best trial-0001 = 0.3000" in text
    assert "trial-0003" in text and "50/200" in text and "val_wer=0.2500" in text
    assert "ETA 3m00s" in text


def test_without_a_terminal_the_view_only_logs(tmp_path):
    out = io.StringIO()
    view = SweepView(Console(file=out, force_terminal=False), name="demo", budget=6)
    assert view.live is None
    view.log("trial-0000 started")
    view.refresh({"done": 0}, "-", [], slots=1)
    assert out.getvalue() == "trial-0000 started\n"


def test_without_a_terminal_each_validation_is_one_line_with_the_trials_eta(tmp_path):
    """Slurm logs, nohup, `| tee`: a line per new validation, unwrapped however narrow the console;
    the ETA is the trial's remaining steps at its own pace (62.5 s for 200 steps, 800 to go)."""
    trial_dir = TrialDir(tmp_path / "trial-0003")
    trial_dir.path.mkdir()
    metrics = {"val_wer": 0.412, "val_bleu": 0.31, "val_bleu/en-de": 0.31}
    write_progress(trial_dir, 200, 1000, metrics, elapsed=62.5)
    out = io.StringIO()
    view = SweepView(Console(file=out, width=40), name="demo", budget=6)
    view.log_validations([("trial-0003", trial_dir, 90.0)])
    view.log_validations([("trial-0003", trial_dir, 91.0)])  # the same validation: no second line
    write_progress(trial_dir, 500, 1000, metrics)  # no `elapsed` (an older trial): its process's age
    view.log_validations([("trial-0003", trial_dir, 300.0)])
    assert out.getvalue().splitlines() == [
        "trial-0003 step 200/1000 val_wer=0.4120 val_bleu=0.3100 ETA 4m10s",
        "trial-0003 step 500/1000 val_wer=0.4120 val_bleu=0.3100 ETA 5m00s",
    ]
