"""The errors users see: a sentence naming the file or key and the fix, one class per kind.

`cli.main` catches `HarnessError` and prints one `error:` line (exit 2) for every kind; the kinds let callers
and tests tell the problems apart without reading the message.
"""


class HarnessError(Exception):
    """A problem the user can fix; the CLI prints it without a traceback and exits non-zero."""


class SpecError(HarnessError):
    """The sweep spec, its search space or its `start_from` entries: a key, a type or a value."""


class UsageError(HarnessError):
    """A command-line option names something that is not there (a trial, a behaviour switch)."""


class DataError(HarnessError):
    """The manifests or audio a sweep or a transcription reads (preflight, transcribe inputs)."""


class ModelError(HarnessError):
    """The model to fine-tune or transcribe with: not found, not a `.nemo`, not a Canary checkpoint."""


class StoreError(HarnessError):
    """The Optuna or MLflow store: unreachable, corrupt, full, or not holding the sweep it should."""


class DefinitionError(HarnessError):
    """The spec no longer defines the study it resumes (objective, retention limit, search space)."""


class NoFeasibleTrialError(HarnessError):
    """A command needs the sweep's best trial, and no feasible trial has completed."""


class TrialsFailedError(HarnessError):
    """Trials failed in a way that stops the command (the first ones all alike, a reproduction)."""


class LaunchError(HarnessError):
    """Starting worker jobs or trial slots: GPUs, Slurm, submitit."""


class OutputError(HarnessError):
    """A file or folder the command writes (report, export) cannot be written."""
