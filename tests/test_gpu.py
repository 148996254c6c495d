"""The GPU path, run by `scripts/gpu-check.sh` (`pytest -m gpu`): a bf16-mixed trial, a real CUDA out-of-memory
classified `oom`, and a 2-GPU DDP (NCCL) trial per freeze mode.

Each `gpu` test is skipped at collection where torch sees too few CUDA devices (`devices.visible_gpus`: nothing is
asked without a GPU driver, else a child process counts them, so torch never loads here for it). The main suite
leaves them out (`-m 'not gpu'`). The tests without the mark check on a CPU what the GPU tests rely on: the
out-of-memory sweep is built as the GPU test runs it, and canary-tiny's activations per second of audio are at
least what sizes its batch to overflow the GPU.
"""

from __future__ import annotations

import functools
import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import soundfile
import yaml
from rich.console import Console

from harness.batching import BUCKET_BUFFER_SIZE
from harness.devices import visible_gpus
from harness.search_space import FREEZE_MODES
from harness.spec import SweepSpec, TrainingSpec, load_spec
from harness.trial_dir import TrialDir
from harness.trial_record import OOM, TrialRecord
from tests.conftest import SEARCH_SPACE, spec_dict, write_spec
from tests.helpers import load_study

GPUS = visible_gpus()

# What canary-tiny keeps for backward per second of padded training audio under bf16-mixed: 1.74 MiB measured on a
# CPU under bf16 autocast (3.44 MiB in fp32; `test_canary_tiny_keeps_at_least_the_assumed_activations_per_second`
# checks the bound). Weights, gradients, optimizer state and the preprocessor's fp32 spectra come on top.
ACTIVATION_MIB_PER_SECOND = 1.5
OOM_CUT_SECONDS = 39.0  # one cut just under `training.max_duration` (40 s): every cut in the same bucket
OOM_FACTOR = 2  # the batch's activations alone need twice the GPU's memory
PARAMS = {"lr": 1e-3, "freeze": "none", "use_loss_mask_for_prompt": True}


def needs_gpus(count: int) -> pytest.MarkDecorator:
    """Skip unless torch sees `count` CUDA devices; the reason says how many it sees."""
    return pytest.mark.skipif(count > GPUS, reason=f"needs {count} CUDA GPU(s); this machine shows {GPUS}")


@functools.cache
def cuda_facts() -> dict:
    """GPU 0's name, memory and bf16 support, asked in a child process (torch stays out of the test process)."""
    code = (
        "import json, torch; p = torch.cuda.get_device_properties(0); "
        "print(json.dumps({'name': p.name, 'memory_mib': p.total_memory // 2**20, "
        "'bf16': torch.cuda.is_bf16_supported()}))"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(child.stdout.strip().splitlines()[-1])


def _sweep(spec: SweepSpec):
    """Run the sweep; its study, MLflow client and runs by name (the parent run as `sweep`)."""
    from mlflow.tracking import MlflowClient

    from harness.sweep import Supervisor

    Supervisor(spec, console=Console(file=io.StringIO(), width=200)).run()
    client = MlflowClient(spec.tracking_uri)
    experiment = client.get_experiment_by_name(spec.experiment_name)
    runs = {}
    for run in client.search_runs([experiment.experiment_id]):
        sweep = run.data.tags.get("harness.role") == "sweep"
        runs["sweep" if sweep else run.data.tags["mlflow.runName"]] = run
    return load_study(spec), client, runs


def _enqueued_sweep(project: Path, name: str, data: dict, params: dict, space: dict, **overrides) -> SweepSpec:
    """A one-trial sweep over `space` (written into the project) whose trial runs `params`."""
    import optuna

    from harness.study import open_storage

    (project / "search_spaces" / f"{name}.yaml").write_text(yaml.safe_dump(space))
    budget = {"trials": 1, "max_retries": 1, **overrides.pop("budget", {})}
    spec_data = spec_dict(data, search_space=f"search_spaces/{name}.yaml", budget=budget, **overrides)
    spec = load_spec(write_spec(project, name, spec_data))
    study = optuna.create_study(study_name=name, storage=open_storage(spec.storage_url), direction="minimize")
    study.enqueue_trial(params)
    return spec


# -- a bf16-mixed trial ----------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_gpus(1)
def test_a_trial_on_one_gpu_trains_in_bf16_mixed_and_the_test_set_is_scored(project, speech_data):
    """`accelerator: auto`, `precision: auto`: the zero-shot baseline, one trial and the test set on the GPU."""
    from harness.system_metrics import PEAK_GPU

    facts = cuda_facts()
    if not facts["bf16"]:
        pytest.skip(f"{facts['name']} has no bf16: `precision: auto` is 32-true there")
    training = {"accelerator": "auto", "precision": "auto"}
    spec_data = spec_dict(speech_data, full=True, budget={"trials": 1}, pruner={"type": "none"}, training=training)
    spec = load_spec(write_spec(project, "gpu-bf16", spec_data))
    study, client, runs = _sweep(spec)

    (trial,) = study.get_trials()
    assert trial.state.name == "COMPLETE", trial.user_attrs
    numerics = TrialRecord.of(trial).numerics
    assert (numerics["precision"], numerics["device"]) == ("bf16-mixed", facts["name"]), numerics
    log = TrialDir.of(spec, 0).log.read_text()
    assert "bfloat16 Automatic Mixed Precision" in log
    run = runs["trial-0000"]
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_wer")] == [10, 20]
    assert {"baseline_val_wer", "best_test_wer"} <= set(runs["sweep"].data.metrics)
    assert "GPU available: True (cuda), used: True" in log and run.data.metrics[PEAK_GPU] > 0


# -- a real CUDA out-of-memory ---------------------------------------------------------------------------


def oom_cuts(gpu_mib: int) -> int:
    """Cuts of `OOM_CUT_SECONDS` whose activations alone need `OOM_FACTOR` times `gpu_mib`: on an H200
    (143771 MiB) 4916 cuts, a batch_duration of 191724 s, 12 GB of float audio in host memory first."""
    return math.ceil(OOM_FACTOR * gpu_mib / ACTIVATION_MIB_PER_SECOND / OOM_CUT_SECONDS)


def long_cut_manifest(train: Path, out: Path, *, lines: int) -> Path:
    """`lines` lines of one `OOM_CUT_SECONDS` clip (the first training clip, repeated) with that clip's text. A
    batch holds at most one epoch of a plain manifest (NeMo repeats only tarred data), hence as many lines as cuts
    a batch must hold; they share one audio file."""
    first = json.loads(train.read_text().splitlines()[0])
    audio, rate = soundfile.read(first["audio_filepath"], dtype="int16")
    samples = int(OOM_CUT_SECONDS * rate)
    soundfile.write(out / "long.wav", numpy.tile(audio, math.ceil(samples / len(audio)))[:samples], rate)
    line = {**first, "audio_filepath": str(out / "long.wav"), "duration": OOM_CUT_SECONDS}
    manifest = out / "long.json"
    manifest.write_text("".join(json.dumps(line) + "\n" for _ in range(lines)))
    return manifest


def oom_sweep(project: Path, speech_data: dict, gpu_mib: int) -> SweepSpec:
    """One trial whose batch_duration needs twice the GPU's memory, on long cuts, two steps if it ever fit."""
    cuts = oom_cuts(gpu_mib)
    seconds = cuts * OOM_CUT_SECONDS
    data = {
        "train": long_cut_manifest(speech_data["train"], project, lines=cuts),
        "validation": speech_data["validation"],
    }
    space = {**SEARCH_SPACE, "batch_duration": {"type": "categorical", "choices": [seconds]}}
    budget = {"max_steps": 2, "val_check_interval": 2}
    training = {"accelerator": "auto"}
    params = {**PARAMS, "batch_duration": seconds}
    return _enqueued_sweep(project, "gpu-oom", data, params, space, budget=budget, training=training)


@pytest.mark.gpu
@needs_gpus(1)
def test_a_batch_duration_too_large_for_the_gpu_is_a_real_oom_recorded_as_such(project, speech_data, monkeypatch):
    from harness.fault_injection import FAULT_ENV  # imports torch: only where a GPU test runs
    from harness.study import MEMORY_CONSTRAINT

    monkeypatch.delenv(FAULT_ENV, raising=False)  # the real thing, not the test hook
    spec = oom_sweep(project, speech_data, cuda_facts()["memory_mib"])
    study, _, runs = _sweep(spec)

    (trial,) = study.get_trials()  # never re-queued, though max_retries is 1
    record = TrialRecord.of(trial)
    log = TrialDir.of(spec, 0).log.read_text()
    assert record.fail_reason == OOM and not record.requeued, f"{trial.state.name} {trial.user_attrs}\n{log[-3000:]}"
    assert trial.state.name == "PRUNED" and trial.constraints == {MEMORY_CONSTRAINT: 1.0}
    run = runs["trial-0000"]
    assert run.info.status == "FAILED" and run.data.tags["harness.fail_reason"] == OOM
    assert "GPU available: True (cuda), used: True" in log and "CUDA out of memory" in log and "injected" not in log


def test_the_out_of_memory_sweep_is_built_as_the_gpu_test_runs_it(project, speech_data, tiny_nemo):
    """On a CPU: the long-cut manifest passes preflight, and an H200-sized batch_duration reaches the trial's
    config whole, its cuts under `max_duration` and fewer than Lhotse's bucket buffer holds (a batch cannot be
    bigger than the buffer)."""
    from harness.canary import inspect_checkpoint, trial_config
    from harness.preflight import check_manifest

    h200 = 143771
    cuts = oom_cuts(h200)
    spec = oom_sweep(project, speech_data, h200)
    info = inspect_checkpoint(tiny_nemo)
    entries, problems = check_manifest(Path(spec.data.train), spec, info, split="train")
    assert not problems and len(entries) == cuts and {e.data["duration"] for e in entries} == {OOM_CUT_SECONDS}
    assert soundfile.info(entries[0].data["audio_filepath"]).duration == pytest.approx(OOM_CUT_SECONDS)
    seconds = cuts * OOM_CUT_SECONDS
    assert seconds > 100_000 and cuts < BUCKET_BUFFER_SIZE
    cfg = trial_config(
        info.config,
        {**PARAMS, "batch_duration": seconds},
        data=spec.data,
        training=spec.training,
        budget=spec.budget,
        seed=0,
    )
    assert cfg.train_ds.batch_duration == seconds and cfg.train_ds.max_duration > OOM_CUT_SECONDS


def test_canary_tiny_keeps_at_least_the_assumed_activations_per_second(project, speech_data, tiny_nemo):
    """The sizing's bound: a training forward of two long cuts under bf16 autocast (on the CPU) saves at least
    `ACTIVATION_MIB_PER_SECOND` for backward per second of padded audio (each saved storage counted once)."""
    import torch

    from harness.canary import inspect_checkpoint, trial_config
    from harness.spec import BudgetSpec, DataSpec
    from harness.training import restore_model

    data = DataSpec(
        train=str(long_cut_manifest(speech_data["train"], project, lines=2)), validation=str(speech_data["validation"])
    )
    params = {**PARAMS, "batch_duration": 2 * OOM_CUT_SECONDS + 1}
    budget = BudgetSpec(max_steps=1, val_check_interval=1)
    cfg = trial_config(
        inspect_checkpoint(tiny_nemo).config,
        params,
        data=data,
        training=TrainingSpec(accelerator="cpu"),
        budget=budget,
        seed=0,
    )
    model = restore_model(tiny_nemo, cfg, trainer=None).train()
    batch = next(iter(model._train_dl))
    saved: dict[int, int] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    input_ids, _ = batch.get_decoder_inputs_outputs()
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        model.forward(
            input_signal=batch.audio,
            input_signal_length=batch.audio_lens,
            transcript=input_ids,
            transcript_length=batch.prompted_transcript_lens - 1,
        )
    padded_seconds = batch.audio.numel() / 16000
    assert padded_seconds == pytest.approx(2 * OOM_CUT_SECONDS, rel=0.01)
    assert sum(saved.values()) / 2**20 / padded_seconds >= ACTIVATION_MIB_PER_SECOND


# -- 2-GPU DDP, every freeze mode ------------------------------------------------------------------------


@pytest.mark.gpu
@needs_gpus(2)
@pytest.mark.parametrize("mode", FREEZE_MODES)
def test_a_two_gpu_ddp_trial_completes_in_each_freeze_mode(project, speech_data, mode):
    """tests/test_ddp.py's 2-rank trial on NCCL instead of gloo: both ranks train to the end, rank 0 reports once."""
    space = {**SEARCH_SPACE, "freeze": {"type": "categorical", "choices": list(FREEZE_MODES)}}
    training = {"accelerator": "auto", "devices": 2}
    params = {**PARAMS, "batch_duration": 10, "freeze": mode}
    spec = _enqueued_sweep(
        project, f"gpu-ddp-{mode}", speech_data, params, space, pruner={"type": "none"}, training=training
    )
    study, client, runs = _sweep(spec)

    (trial,) = study.get_trials()
    assert trial.state.name == "COMPLETE" and trial.params["freeze"] == mode, trial.user_attrs
    numerics = TrialRecord.of(trial).numerics
    log = TrialDir.of(spec, 0).log.read_text()
    assert numerics["devices"] == 2 and "MEMBER: 2/2" in log, numerics
    assert sorted(re.findall(r"harness rank (\d) pid=\d+ ended at step 20", log)) == ["0", "1"]
    run = runs["trial-0000"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_wer")] == [10, 20]  # once, not per rank
    assert "distributed_backend=nccl" in log and numerics["device"] != "cpu", numerics
