"""Names the supervisor writes and the report reads: run names and study attribute keys.

They live apart from both, so the report never imports the supervisor (or its subprocess and
signal machinery) to learn a key.
"""

from __future__ import annotations

# Study-level user attributes (a trial's own live in harness.trial_record).
PARENT_ATTR = "mlflow_parent_run_id"  # the sweep's MLflow parent run
BASELINE_ATTR = "baseline"  # the zero-shot validation figures
BASELINE_OWNER_ATTR = "baseline_by"  # the worker evaluating the baseline
TEST_ATTR = "test"  # {"trial": number, "metrics": {...}}: the best checkpoint on the test set
TEST_BASELINE_ATTR = "test_baseline"  # {"metrics": {...}}: the pretrained model on the test set
TEST_RUNNER_UP_ATTR = "test_runner_up"  # {"trial": number, "metrics": {...}}: the runner-up's checkpoint on it

# Folders of the processes beside the trials (`TrialDir.of(spec, name)`), each with its `predictions.jsonl`.
BASELINE_DIR = "baseline"  # the zero-shot baseline on the validation set
TEST_DIR, TEST_BASELINE_DIR, TEST_RUNNER_UP_DIR = "test", "test-baseline", "test-runner-up"  # on the test set
DECISION_ATTR = "decision"  # the seed-confirmed decision (`confirmation.Decision.record`): which trial is the best
SPEC_FILE_ATTR = "spec_file"  # the sweep spec's file, relative to the project root where inside it (`sweep_lookup`)
# The jobs `harness launch` submitted: [{"executor", "job_id", "tasks", "submitted", "log_dir"}] (`harness status`)
LAUNCH_JOBS_ATTR = "launch_jobs"


def run_name(number: int) -> str:
    """`trial-0007`: the MLflow run name and the trial's work dir."""
    return f"trial-{number:04d}"
