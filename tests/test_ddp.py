"""Multi-device trials: Lightning DDP on 2 CPU processes (gloo), the code path NCCL takes on GPUs."""

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jiwer
import optuna
import pytest
import sacrebleu
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from rich.console import Console

from harness.fault_injection import FAULT_ENV
from harness.freezing import is_bn_or_se
from harness.manifest import manifest_lines
from harness.report._summary import memory_rows
from harness.search_space import FREEZE_MODES, load_search_space
from harness.spec import load_spec
from harness.study import MEMORY_CONSTRAINT, open_storage
from harness.sweep import Supervisor, trial_result
from harness.trial import EXIT_OOM, Result
from harness.trial_dir import TrialDir
from harness.trial_record import TrialRecord
from tests.conftest import REPO, spec_dict, write_spec
from tests.helpers import load_study

TWO_RANKS = {"accelerator": "cpu", "devices": 2}


def _sweep(spec):
    Supervisor(spec, console=Console(file=io.StringIO(), width=200)).run()
    study = load_study(spec)
    client = MlflowClient(spec.tracking_uri)
    experiment = client.get_experiment_by_name(spec.experiment_name)
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    return study, client, runs


def _rank_ends(trial_dir: TrialDir) -> dict[int, tuple[int, int]]:
    """rank -> (pid, step) from the line each rank prints when its training ends."""
    log = trial_dir.log.read_text()
    ends = re.findall(r"harness rank (\d+) pid=(\d+) ended at step (\d+)", log)
    return {int(rank): (int(pid), int(step)) for rank, pid, step in ends}


def _running(pid: int) -> bool:
    """A process that still runs (a zombie waiting for its parent to reap it has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


# ~110 s: `make test` keeps the freeze-mode DDP test; this end to end one runs in `make test-extended`
@pytest.mark.extended
def test_a_two_rank_trial_trains_on_both_and_records_once(project, speech_data, shared_clips, retention_data):
    # Validation lines that share clips and file names (one cut id for several lines), 9 of them in batches
    # of 4: the last round has one cut, which Lhotse pads with a `_dup` copy for rank 1.
    data = {"validation": str(shared_clips), "retention": [str(retention_data)]}
    training = TWO_RANKS | {"validation_batch_size": 4}
    budget = {"trials": 1, "baseline": True}
    spec_data = spec_dict(speech_data, data=data, budget=budget, pruner={"type": "none"}, training=training)
    spec = load_spec(write_spec(project, "ddp", spec_data))
    study, client, runs = _sweep(spec)

    (trial,) = study.get_trials()
    assert trial.state == TrialState.COMPLETE, trial.user_attrs
    trial_dir = TrialDir.of(spec, 0)
    log = trial_dir.log.read_text()
    assert "MEMBER: 1/2" in log and "MEMBER: 2/2" in log  # Lightning's line for each rank joining the group
    assert {rank: step for rank, (_, step) in _rank_ends(trial_dir).items()} == {0: 20, 1: 20}
    run = runs["trial-0000"]
    history = client.get_metric_history(run.info.run_id, "val_wer")
    assert [m.step for m in history] == [10, 20]  # one value per validation, not one per rank
    assert run.data.metrics["steps_trained"] == 20
    # One system-metrics monitor, rank 0's: a second would log each step twice.
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")]
    assert steps and len(steps) == len(set(steps))
    # Both ranks' validation shards are scored: every validation line once, under its own identity, for the
    # trial and the zero-shot baseline, and the figures are jiwer's and sacreBLEU's over those lines.
    for process in (trial_dir, TrialDir.of(spec, "baseline")):
        figures = json.loads(process.result().read_text())["final"]
        assert _figures_of(process.predictions, shared_clips) == pytest.approx(
            {key: figures[key] for key in ("val_wer", "val_bleu")}
        ), process.name
    result = json.loads(trial_dir.result().read_text())
    assert result["state"] == "complete" and result["steps"] == 20
    # Rank 0 alone scores the whole retention set after training (not its DDP shard: the lines would not
    # pair up with the hypotheses), once.
    assert run.data.metrics["retention_wer"] == result["final"]["retention_wer"]
    assert len(client.get_metric_history(run.info.run_id, "retention_wer")) == 1


def _figures_of(predictions: Path, manifest: Path) -> dict[str, float]:
    """WER and BLEU recomputed with jiwer and sacreBLEU, after checking that the predictions hold each
    manifest line once, in order."""
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    lines = manifest_lines(manifest)
    assert [(r["pair"], r["reference"]) for r in rows] == [
        (f"{e['source_lang']}-{e['target_lang']}", e["text"]) for e in lines
    ]
    asr = [r for r in rows if r["pair"] == "en-en"]
    ast = [r for r in rows if r["pair"] == "en-de"]
    bleu = sacrebleu.corpus_bleu([r["hypothesis"] for r in ast], [[r["reference"] for r in ast]]).score / 100
    return {"val_wer": jiwer.wer([r["reference"] for r in asr], [r["hypothesis"] for r in asr]), "val_bleu": bleu}


@pytest.mark.extended  # a second 2-rank trial (about 45 s on 2 cores); the complete one above runs in make test
def test_a_pruned_two_rank_trial_ends_on_both_ranks(project, speech_data):
    spec = load_spec(write_spec(project, "ddp-prune", spec_dict(speech_data, budget={"trials": 2}, training=TWO_RANKS)))
    # A previous perfect trial (WER 0 at every step): the real one is pruned at its first validation.
    study = optuna.create_study(study_name="ddp-prune", storage=open_storage(spec.storage_url), direction="minimize")
    params = {"lr": 1e-3, "batch_duration": 10, "freeze": "none", "use_loss_mask_for_prompt": True}
    study.add_trial(
        optuna.trial.create_trial(
            params=params,
            distributions=load_search_space(spec.search_space),
            value=0.0,
            intermediate_values={10: 0.0, 20: 0.0},
        )
    )
    study, client, runs = _sweep(spec)

    real = study.get_trials()[1]
    assert real.state == TrialState.PRUNED and TrialRecord.of(real).pruned_at == 10
    run = runs["trial-0001"]
    assert run.info.status == "KILLED" and run.data.metrics["steps_trained"] == 10
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_wer")] == [10]
    # Rank 1 learnt of the prune too: it stopped at step 10 rather than waiting in an all-reduce,
    # and neither rank outlived the trial.
    ends = _rank_ends(TrialDir.of(spec, 1))
    assert {rank: step for rank, (_, step) in ends.items()} == {0: 10, 1: 10}
    assert not any(_running(pid) for pid, _ in ends.values())


def test_out_of_memory_on_rank_1_is_the_trials_oom_not_a_crash(project, speech_data, monkeypatch):
    """Rank 1 runs out of memory at its first step; rank 0 then fails in the collective rank 1 left, or is
    killed by Lightning first. The trial is still an OOM, infeasible and not retried, as on one device."""
    monkeypatch.setenv(FAULT_ENV, "oom_rank:1")
    budget = {"trials": 1, "max_retries": 1}
    spec = load_spec(write_spec(project, "ddp-oom", spec_dict(speech_data, budget=budget, training=TWO_RANKS)))
    params = {"lr": 1e-3, "batch_duration": 10, "freeze": "none", "use_loss_mask_for_prompt": True}
    study = optuna.create_study(study_name="ddp-oom", storage=open_storage(spec.storage_url), direction="minimize")
    study.enqueue_trial(params)
    study, client, runs = _sweep(spec)

    (trial,) = study.get_trials()  # no retry queued
    assert trial.state == TrialState.PRUNED and trial.constraints == {MEMORY_CONSTRAINT: 1.0}, trial.user_attrs
    record = TrialRecord.of(trial)
    assert record.fail_reason == "oom" and not record.requeued
    run = runs["trial-0000"]
    assert run.info.status == "FAILED" and run.data.tags["harness.fail_reason"] == "oom"
    trial_dir = TrialDir.of(spec, 0)
    assert "(rank 1, injected)" in trial_dir.log.read_text()
    assert json.loads(trial_dir.result(1).read_text())["reason"] == "oom"  # rank 1's own record
    assert memory_rows(study.get_trials()) == [["none", "-", "10"]]  # the report: batch_duration 10 ran out


CONNECTION_CLOSED = "error: RuntimeError: Connection closed by peer"


@pytest.mark.parametrize(
    ("written", "code", "expected"),
    [
        # Lightning's observer SIGKILLed rank 0 before it wrote anything; rank 1 had run out of memory.
        ({1: "oom"}, -9, "oom"),
        # Rank 0 failed in the collective rank 1 left, after rank 1's OOM, then was killed while writing.
        ({1: "oom", 0: CONNECTION_CLOSED}, -9, "oom"),
        # An OOM anywhere wins, even written after another rank's error.
        ({0: CONNECTION_CLOSED, 1: "oom"}, 1, "oom"),
        # Otherwise the first failure is the cause, not rank 0's broken connection.
        ({1: "error: RuntimeError: broken", 0: CONNECTION_CLOSED}, 1, "error: RuntimeError: broken"),
        ({0: "error: RuntimeError: broken"}, 1, "error: RuntimeError: broken"),
        ({0: "error: RuntimeError: broken"}, -9, "killed"),  # rank 0 killed while writing its own failure
        ({}, -9, "killed"),
        ({}, EXIT_OOM, "oom"),
    ],
)
def test_a_trials_failure_is_decided_from_every_rank(tmp_path, written, code, expected):
    trial_dir = TrialDir(tmp_path)
    for order, (rank, reason) in enumerate(written.items()):  # written in this order, a second apart
        Result(state="fail", reason=reason).write(trial_dir, rank)
        os.utime(trial_dir.result(rank), (1000 + order, 1000 + order))
    assert trial_result(trial_dir, code, devices=2) == Result(state="fail", reason=expected)


def test_rank_0s_finished_result_is_the_trials_and_a_torn_file_is_none(tmp_path):
    trial_dir = TrialDir(tmp_path)
    complete = Result(state="complete", objective=0.5, steps=20)
    complete.write(trial_dir)
    Result(state="fail", reason="oom").write(trial_dir, 1)  # rank 0 gathered every rank's figures: it stands
    assert trial_result(trial_dir, 0, devices=2) == complete
    trial_dir.result().write_text('{"state": "complete", "obj')  # rank 0 killed while writing
    assert trial_result(trial_dir, -9, devices=2) == Result(state="fail", reason="oom")


def _train_ranks(out: Path, nemo: Path, speech_data, modes) -> dict[tuple[str, int], dict]:
    """tests/ddp_freeze_ranks.py on 2 gloo ranks: (mode, rank) -> what changed and what trained there."""
    args = [str(out), str(nemo), str(speech_data["train"]), str(speech_data["validation"]), *modes]
    done = subprocess.run(
        [sys.executable, "-m", "tests.ddp_freeze_ranks", *args],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {
        (mode, rank): json.loads((out / f"{mode}.rank{rank}.json").read_text()) for mode in modes for rank in (0, 1)
    }


def _tensor_sets(model) -> dict[str, set[str]]:
    """Names in the pretrained twin, from its module tree (not from freezing.py): every parameter, the
    encoder's, and the BatchNorm/SE layers' parameters and buffers (running statistics)."""
    params = {name for name, _ in model.named_parameters()}
    bn = set()
    for prefix, module in model.named_modules():
        if is_bn_or_se(module):
            bn |= {f"{prefix}.{n}" for n, _ in [*module.named_parameters(), *module.named_buffers()]}
    return {"params": params, "encoder": {n for n in params if n.startswith("encoder.")}, "bn": bn}


def _expected(mode: str, sets: dict[str, set[str]]) -> set[str]:
    """The parameters a mode trains."""
    bn_params = sets["bn"] & sets["params"]
    return {
        "none": sets["params"],
        "encoder": sets["params"] - sets["encoder"],
        "encoder_bn_se": (sets["params"] - sets["encoder"]) | (bn_params & sets["encoder"]),
        "all_but_bn_se": bn_params,
    }[mode]


def test_every_freeze_mode_trains_under_ddp_and_moves_only_what_it_trains(tmp_path, tiny_nemo, speech_data):
    """Each mode: a few steps on 2 gloo ranks with a validation in between (all modes in one process group,
    25-45 s on 2 busy cores), then on both ranks the frozen parameters are the pretrained ones and the trained
    ones moved, alike on both (DDP kept them in step)."""
    from nemo.collections.asr.models import EncDecMultiTaskModel

    records = _train_ranks(tmp_path, tiny_nemo, speech_data, FREEZE_MODES)
    sets = _tensor_sets(EncDecMultiTaskModel.restore_from(str(tiny_nemo), map_location="cpu"))
    for mode in FREEZE_MODES:
        trained = _expected(mode, sets)
        for rank in (0, 1):
            record = records[mode, rank]
            changed = set(record["changed"])
            assert (record["steps"], record["validations"]) == (4, 2), (mode, rank)
            assert set(record["trainable"]) == trained, (mode, rank)
            # Exactly the trained parameters moved (the frozen ones are the pretrained values), and the
            # BatchNorm statistics wherever BatchNorm stays in train mode.
            assert changed == trained | (set() if mode == "encoder" else sets["bn"]), (mode, rank)
        assert records[mode, 0]["digest"] == records[mode, 1]["digest"], mode


@pytest.mark.extended  # one more 2-rank trial (about 25 s on 2 cores); the test above covers every mode on 2 ranks
def test_a_two_rank_trial_with_a_frozen_encoder_completes_through_the_supervisor(project, speech_data, tiny_nemo):
    """The trial process's own path: `harness.trial` on 2 ranks in the hardest mode (a frozen encoder whose
    BatchNorm trains), its checkpoint moved exactly where the mode trains."""
    import torch
    from nemo.collections.asr.models import EncDecMultiTaskModel

    training = TWO_RANKS | {"keep_checkpoints": "best"}
    spec_data = spec_dict(speech_data, budget={"trials": 1}, pruner={"type": "none"}, training=training)
    spec = load_spec(write_spec(project, "ddp-freeze", spec_data))
    params = {"lr": 1e-3, "batch_duration": 10, "freeze": "encoder_bn_se", "use_loss_mask_for_prompt": True}
    study = optuna.create_study(study_name="ddp-freeze", storage=open_storage(spec.storage_url), direction="minimize")
    study.enqueue_trial(params)
    study, _, _ = _sweep(spec)

    (trial,) = study.get_trials()
    assert trial.state == TrialState.COMPLETE and trial.params == params, trial.user_attrs
    trial_dir = TrialDir.of(spec, 0)
    assert {rank: step for rank, (_, step) in _rank_ends(trial_dir).items()} == {0: 20, 1: 20}
    pretrained = EncDecMultiTaskModel.restore_from(str(tiny_nemo), map_location="cpu")
    tuned = dict(EncDecMultiTaskModel.restore_from(str(trial_dir.model), map_location="cpu").named_parameters())
    moved = {name for name, p in pretrained.named_parameters() if not torch.equal(p, tuned[name])}
    assert moved == _expected("encoder_bn_se", _tensor_sets(pretrained))
