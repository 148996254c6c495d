"""A trial process's folder, `mlruns/trials/<sweep>/<name>/`, and the names of the files in it.

The supervisor writes the job and config there and the trial process writes its log, progress,
results, predictions and checkpoint; both sides (and the report, export and tests) name each file
through `TrialDir`, so a name is spelt once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.names import run_name

if TYPE_CHECKING:
    from harness.spec import SweepSpec


class _File:
    """A file of the folder, by its name: on a `TrialDir` it reads as that file's path."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, folder: TrialDir, owner: type | None = None) -> Path:
        return folder.path / self.name


@dataclass(frozen=True)
class TrialDir:
    """The folder of one process: a trial (`trial-0007`), `baseline`, the test runs (`test`, `test-baseline`,
    `test-runner-up`: `harness.names`) or `trial-0007-reproduction`.

    Example:
        >>> TrialDir(Path("mlruns/trials/demo/trial-0007")).result(1).name
        'result.rank1.json'
    """

    path: Path

    job = _File("job.json")  # what the supervisor asks of the process (`harness.trial.Job`)
    config = _File("config.yaml")  # the trial's resolved NeMo config
    tokenizers = _File("tokenizers")  # tokenizer files taken out of the `.nemo` (`training.tokenizers: extract`)
    log = _File("trial.log")  # the process's stdout and stderr
    log_tail = _File("trial-log-tail.txt")  # the log's last lines, an artifact of a failed run
    progress = _File("progress.json")  # the last validation's report, read by the live view
    predictions = _File("predictions.jsonl")  # the last validation's (a test run's) transcripts, a JSON line each
    blend = _File("blend")  # with replay, the blend's sources in the trial's own order (`harness.replay.shuffle_blend`)
    model = _File("model.nemo")  # the fine-tuned checkpoint, where `training.keep_checkpoints` keeps it

    @classmethod
    def of(cls, spec: SweepSpec, trial: int | str) -> TrialDir:
        """The folder of trial number `trial` (`trial-NNNN`), or of the process named `trial`, in `spec`'s sweep."""
        return cls(spec.trials_dir / (run_name(trial) if isinstance(trial, int) else trial))

    @property
    def name(self) -> str:
        return self.path.name

    def result(self, rank: int = 0) -> Path:
        """Rank 0's `result.json` (the trial's record), `result.rank<k>.json` for the other DDP ranks."""
        return self.path / ("result.json" if rank == 0 else f"result.rank{rank}.json")

    def __str__(self) -> str:
        return str(self.path)
