"""One trial in its own process: `python -m harness.trial <trial_dir>`.

The supervisor writes `job.json` and the trial's resolved `config.yaml` into the trial dir,
starts this process, and reads `result.json` when it exits. A process per trial frees all GPU
memory on exit and turns a crash or OOM into one failed trial instead of a dead sweep.
Exit codes: 0 finished (complete or pruned, see result.json), 3 out of memory, other = crash.
With `training.devices > 1` this process is DDP rank 0 and Lightning starts the other ranks as
`python -m harness.trial <trial_dir>` too; only rank 0 reports and saves. Every rank writes its own
result (`TrialDir.result`): Lightning kills rank 0 when another rank fails, so rank 0 alone cannot say why.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from harness.spec import SweepSpec, load_spec
from harness.trial_dir import TrialDir

if TYPE_CHECKING:  # torch and Lightning load in the trial process only, where they are needed
    from harness.merging import Merges

EXIT_OOM = 3
State = Literal["complete", "pruned", "fail"]
TEST_MODES = ("test", "test_baseline")  # score a model on data.test: a fine-tuned checkpoint, the pretrained one
PRETRAINED_MODES = ("baseline", "test_baseline")  # the pretrained model: plain manifests, no behaviour tokens


@dataclass
class Job:
    """What the supervisor asks of one trial process."""

    spec: str
    nemo: str
    freeze: str
    seed: int
    run_id: str
    max_steps: int
    trial_id: int | None = None
    number: int | None = None
    storage: str | None = None  # the supervisor's URIs win over the spec's (`harness worker --storage`)
    mode: str = "train"  # train | baseline (validate the pretrained model) | TEST_MODES (score `nemo` on data.test)
    save_model: bool = True
    tracking_uri: str | None = None
    threads: int | None = None  # torch's intra-op threads; a reproduction sets its trial's (`harness.numerics`)
    confirm: bool = False  # a seed-confirmation run (`harness.confirmation`): never pruned, its checkpoint saved
    merge_alphas: list[float] = field(default_factory=list)  # judged after training (`harness.merging`); empty: none

    def write(self, trial_dir: TrialDir) -> None:
        trial_dir.job.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, trial_dir: TrialDir) -> Job:
        return cls(**json.loads(trial_dir.job.read_text()))


@dataclass
class Result:
    """What a trial process reports back; `state` is complete, pruned or fail."""

    state: State
    objective: float | list[float] | None = None  # a list for multi-objective (pareto) sweeps
    final: dict = field(default_factory=dict)
    best: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    batches: dict = field(default_factory=dict)
    steps: int = 0
    pruned_at: int | None = None
    reason: str | None = None
    wall_seconds: float = 0.0
    numerics: dict = field(default_factory=dict)  # what the figures depend on (`harness.numerics.Numerics`)
    merge_alpha: float | None = None  # `final` and the saved model are this merge (`harness.merging`)
    merges: dict = field(default_factory=dict)  # every judged alpha ("0.5") -> its figures

    def write(self, trial_dir: TrialDir, rank: int = 0) -> None:
        trial_dir.result(rank).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, trial_dir: TrialDir, rank: int = 0) -> Result | None:
        path = trial_dir.result(rank)
        return cls(**json.loads(path.read_text())) if path.is_file() else None


def run(trial_dir: TrialDir) -> Result:
    """Dispatch on the job's mode: fine-tune (a trial), baseline (zero-shot) or test (best checkpoint)."""
    import torch
    from lightning.pytorch import seed_everything

    from harness import numerics
    from harness.stopping import trial_rank
    from harness.system_metrics import monitored

    job = Job.read(trial_dir)
    spec = load_spec(job.spec)
    spec.use_stores(storage=job.storage, tracking_uri=job.tracking_uri)
    if job.threads is not None:  # before any torch work: the thread count decides the order of every sum
        torch.set_num_threads(job.threads)
    seed_everything(job.seed, workers=True)
    started = time.monotonic()
    # System metrics on the run for the process's life; not for a test-set score (a finished trial's run).
    testing = job.mode in TEST_MODES
    with monitored(job.run_id, spec.tracking_uri, enabled=not testing and trial_rank() == 0):
        result = _test(job, spec, trial_dir) if testing else _train_or_validate(job, spec, trial_dir)
    result.wall_seconds = time.monotonic() - started
    result.numerics = numerics.collect(spec.training, job.seed).as_dict()  # the Trainer's torch flags still hold
    return result


@dataclass
class _Reporting:
    """The callbacks through which one trial process reports, and the pieces read back when it ends."""

    tracker: Any
    transcripts: Any
    history: Any
    batches: Any
    pruning: Any | None
    study: Any | None
    callbacks: list
    pretrained: Any | None = None  # theta_0 for the merges (`harness.merging.PretrainedWeights`)


def _reporting(job: Job, spec: SweepSpec, trial_dir: TrialDir) -> _Reporting:
    """Figures from NeMo's own decode feed the history, MLflow, the progress file and the pruner."""
    from optuna.pruners import NopPruner

    from harness.callbacks import MetricsLogger, ProgressWriter, PruningReporter
    from harness.fault_injection import injected_faults
    from harness.freezing import FreezeCallback
    from harness.metrics import ValidationHistory, logged_loss
    from harness.objective import objective_value
    from harness.pruners import make_pruner
    from harness.stopping import trial_rank
    from harness.study import open_study, trial_handle
    from harness.tracking import Tracker
    from harness.training import BatchStats
    from harness.transcripts import ValidationTranscripts

    tracker = Tracker(spec.tracking_uri, spec.experiment_name)
    transcripts = ValidationTranscripts(spec.behaviours)

    def collect(callback_metrics) -> dict[str, float]:
        """One validation's record: NeMo's loss, and WER/BLEU scored from its hypotheses."""
        return {**logged_loss(callback_metrics), **transcripts.figures}

    history = ValidationHistory(spec.objective, spec.direction, collect)
    batches = BatchStats()
    callbacks = [
        transcripts,
        history,
        batches,
        FreezeCallback(job.freeze),
        MetricsLogger(tracker, job.run_id, collect),
        ProgressWriter(trial_dir, job.max_steps, collect),
    ]
    pruning = study = None
    if job.trial_id is not None and not spec.multi_objective:  # every rank takes part in the prune decision
        pruner = NopPruner() if job.confirm else make_pruner(spec)  # a confirmation run trains to full length
        study = open_study(spec, pruner=pruner) if trial_rank() == 0 else None
        handle = trial_handle(study, job.trial_id) if study is not None else None
        pruning = PruningReporter(handle, lambda m: objective_value(collect(m), spec.objective))
        callbacks.append(pruning)
    pretrained = None
    if job.merge_alphas and job.mode == "train":  # theta_0 of what trains, copied when training starts
        from harness.merging import PretrainedWeights

        pretrained = PretrainedWeights()
        callbacks.append(pretrained)
    callbacks += injected_faults()  # the test hook; empty in every real run
    return _Reporting(tracker, transcripts, history, batches, pruning, study, callbacks, pretrained)


def _train_or_validate(job: Job, spec: SweepSpec, trial_dir: TrialDir) -> Result:
    """Restore under the trial config; fine-tune (reporting to Optuna and MLflow) or only validate."""
    from omegaconf import DictConfig, OmegaConf

    from harness.replay import shuffle_blend
    from harness.training import build_trainer, restore_model

    reporting = _reporting(job, spec, trial_dir)
    steps = max(job.max_steps, 1)
    trainer = build_trainer(
        spec.training,
        max_steps=steps,
        val_check_interval=min(spec.budget.val_check_interval, steps),
        callbacks=reporting.callbacks,
    )
    config = OmegaConf.load(trial_dir.config)
    assert isinstance(config, DictConfig), "the supervisor writes a mapping"
    shuffle_blend(config.train_ds, trial_dir.blend, job.seed)  # with replay: each source in the seed's order
    model = restore_model(Path(job.nemo), config, trainer)
    if job.mode == "baseline":
        trainer.validate(model, verbose=False)  # its on_validation_end hooks record the history
    else:
        trainer.fit(model)
    return _conclude(job, spec, trial_dir, reporting, model, steps_trained=trainer.global_step)


def _conclude(
    job: Job, spec: SweepSpec, trial_dir: TrialDir, reporting: _Reporting, model, *, steps_trained: int
) -> Result:
    """Retention figures, the merges, predictions artifact, checkpoint, MLflow summary metrics and the result."""
    from harness.objective import objective_values
    from harness.retention import score_retention
    from harness.scoring import write_predictions
    from harness.stopping import trial_rank
    from harness.system_metrics import peak_memory

    history, pruning = reporting.history, reporting.pruning
    pruned = pruning is not None and pruning.pruned_at is not None
    final = dict(history.final)
    print(f"harness rank {trial_rank()} pid={os.getpid()} ended at step {steps_trained}", flush=True)
    if trial_rank() != 0:  # rank 0 holds the same gathered figures and records them once
        return Result(state="pruned" if pruned else "complete", final=final, steps=steps_trained)
    transcripts = reporting.transcripts.transcripts  # the last validation's hypotheses
    retention = {} if pruned else score_retention(model, spec, baseline=job.mode == "baseline")  # old domain
    merges = None if pruned or reporting.pretrained is None else _merge(job, spec, reporting, model, final, retention)
    if merges is not None:  # the trial's figures are the merge it hands over
        final = {"step": steps_trained, **merges.chosen.validation}
        retention, transcripts = merges.chosen.retention, merges.chosen.transcripts
    if transcripts:  # to read beside the figures
        predictions = write_predictions(trial_dir.predictions, transcripts, with_behaviours=bool(spec.behaviours))
        reporting.tracker.log_artifact(job.run_id, predictions, "predictions")
    values = objective_values(final | retention, spec.objective)
    keep = job.confirm or _may_be_kept(spec, reporting.study, values[0])  # the decision may pick any confirmed run
    if not pruned and job.mode == "train" and job.save_model and keep:
        model.save_to(str(trial_dir.model))  # merged at the chosen alpha, if any: what `export` hands over
    summary = {f"final_{k}": v for k, v in final.items() if k != "step"}
    summary |= {f"best_{k}": v for k, v in history.best.items() if k != "step"}
    summary |= {"objective": values[0], "steps_trained": steps_trained, **reporting.batches.summary()}
    summary |= peak_memory()  # which batch_duration fits, beside the params in the MLflow UI
    summary |= merges.metrics() if merges is not None else {}
    reporting.tracker.log_metrics(job.run_id, summary | retention, step=steps_trained)
    return Result(
        state="pruned" if pruned else "complete",
        objective=values if spec.multi_objective else values[0],
        final=final | retention,
        best=history.best,
        history=history.history,
        batches=reporting.batches.summary(),
        steps=steps_trained,
        pruned_at=pruning.pruned_at if pruning else None,
        merge_alpha=None if merges is None else merges.alpha,
        merges={} if merges is None else merges.record(),
    )


def _merge(job: Job, spec: SweepSpec, reporting: _Reporting, model, final: dict, retention: dict) -> Merges:
    """Judge the job's `merge_alphas` (`harness.merging`), leave the model merged at the chosen one and record
    that alpha as the run's `merge_alpha` param."""
    from harness.merging import Judged, judge_merges

    assert reporting.pretrained is not None, "judged only where theta_0 was taken"
    tuned = Judged({k: v for k, v in final.items() if k != "step"}, retention, reporting.transcripts.transcripts)
    merges = judge_merges(
        model,
        reporting.pretrained.tensors,
        spec,
        job.merge_alphas,
        tuned,
        reporting.transcripts,
        _baseline(spec, reporting.study),
    )
    reporting.tracker.log_params(job.run_id, {"merge_alpha": merges.alpha})
    print(
        f"harness merges: alphas {', '.join(map(str, sorted(merges.judged)))} judged over {merges.changed} changed "
        f"tensors in {merges.seconds:.1f} s; merge_alpha {merges.alpha}",
        flush=True,
    )
    return merges


def _baseline(spec: SweepSpec, study) -> dict | None:
    """The zero-shot baseline's figures, which the retention limit is measured from; None without a limit."""
    if spec.objective.retention_max_wer_increase is None:
        return None
    from harness.names import BASELINE_ATTR
    from harness.study import find_study

    study = study if study is not None else find_study(spec)
    return None if study is None else study.user_attrs.get(BASELINE_ATTR)


def _may_be_kept(spec: SweepSpec, study, value: float) -> bool:
    """With `keep_checkpoints: best`, skip saving a model that is already beaten (a 1B save costs
    gigabytes and tens of seconds); the supervisor still deletes whatever is not the best."""
    if spec.training.keep_checkpoints != "best" or study is None:
        return True
    from harness.study import best_trial, primary_value

    best = best_trial(study)
    best_value = primary_value(best) if best is not None else None
    if best_value is None:
        return True
    return not spec.direction.better(best_value, value)


def _test(job: Job, spec: SweepSpec, trial_dir: TrialDir) -> Result:
    """Score a checkpoint on the test manifest (the pretrained model on its plain copy), log `test_*` metrics on
    its run and keep its transcripts as predictions (the report's intervals pair them with another run's)."""
    from nemo.collections.asr.models import EncDecMultiTaskModel

    from harness.scoring import decode_manifest, score, write_predictions
    from harness.tracking import Tracker
    from harness.training import inference_context, inference_device
    from harness.trial_manifests import trial_data

    model = EncDecMultiTaskModel.restore_from(job.nemo, map_location=inference_device(spec.training)).eval()
    test_manifest = trial_data(spec, baseline=job.mode in PRETRAINED_MODES).test
    assert test_manifest is not None, "the supervisor starts a test run only with data.test"
    with inference_context(spec.training):
        transcripts = decode_manifest(model, Path(test_manifest), spec.data.text_field, spec.behaviours)
    write_predictions(trial_dir.predictions, transcripts, with_behaviours=bool(spec.behaviours))
    metrics = {f"test_{k}": v for k, v in score(transcripts).items()}
    Tracker(spec.tracking_uri, spec.experiment_name).log_metrics(job.run_id, metrics)
    return Result(state="complete", final=metrics)


def classify_failure(exc: BaseException) -> tuple[str, int]:
    """(reason, exit code): OOM is named as such so users lower batch_duration, not debug."""
    import torch

    from harness.trial_record import OOM

    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return OOM, EXIT_OOM
    return f"error: {type(exc).__name__}: {exc}"[:500], 1


def main(argv: list[str] | None = None) -> int:
    from harness.stopping import die_with_parent, trial_rank

    argv = sys.argv[1:] if argv is None else argv
    trial_dir = TrialDir(Path(argv[0]))
    rank = trial_rank()
    if rank:
        die_with_parent()  # a DDP rank must not outlive the trial process that started it
    try:
        result = run(trial_dir)
    except Exception as exc:
        traceback.print_exc()
        reason, code = classify_failure(exc)
        Result(state="fail", reason=reason).write(trial_dir, rank)  # the supervisor weighs every rank's
        return code
    result.write(trial_dir, rank)
    return 0


def exit_now(code: int) -> NoReturn:
    """Exit without the interpreter's teardown (about 2 s of freeing torch and NeMo objects module by
    module): everything the trial produced is written by now. Exit hooks still run."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
