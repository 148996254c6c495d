"""Multi-device trials: Lightning DDP on 2 CPU processes (gloo), the code path NCCL takes on GPUs."""

import io
import json
import re
from pathlib import Path

import jiwer
import optuna
import pytest
import sacrebleu
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from rich.console import Console

from harness.manifest import manifest_lines
from harness.search_space import load_search_space
from harness.spec import load_spec
from harness.study import open_storage
from harness.sweep import Supervisor
from tests.conftest import spec_dict, write_spec
from tests.helpers import load_study

TWO_RANKS = {"accelerator": "cpu", "devices": 2}


def _sweep(spec):
    Supervisor(spec, console=Console(file=io.StringIO(), width=200)).run()
    study = load_study(spec)
    client = MlflowClient(spec.tracking_uri)
    experiment = client.get_experiment_by_name(spec.experiment_name)
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    return study, client, runs


def _rank_ends(trial_dir) -> dict[int, tuple[int, int]]:
    """rank -> (pid, step) from the line each rank prints when its training ends."""
    log = (trial_dir / "trial.log").read_text()
    ends = re.findall(r"harness rank (\d+) pid=(\d+) ended at step (\d+)", log)
    return {int(rank): (int(pid), int(step)) for rank, pid, step in ends}


def _running(pid: int) -> bool:
    """A process that still runs (a zombie waiting for its parent to reap it has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


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
    trial_dir = spec.trials_dir / "trial-0000"
    log = (trial_dir / "trial.log").read_text()
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
    for name, process in (("trial-0000", trial_dir), ("baseline", spec.trials_dir / "baseline")):
        figures = json.loads((process / "result.json").read_text())["final"]
        assert _figures_of(process / "predictions.jsonl", shared_clips) == pytest.approx(
            {key: figures[key] for key in ("val_wer", "val_bleu")}
        ), name
    result = json.loads((trial_dir / "result.json").read_text())
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
    assert real.state == TrialState.PRUNED and real.user_attrs["pruned_at"] == 10
    run = runs["trial-0001"]
    assert run.info.status == "KILLED" and run.data.metrics["steps_trained"] == 10
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_wer")] == [10]
    # Rank 1 learnt of the prune too: it stopped at step 10 rather than waiting in an all-reduce,
    # and neither rank outlived the trial.
    ends = _rank_ends(spec.trials_dir / "trial-0001")
    assert {rank: step for rank, (_, step) in ends.items()} == {0: 10, 1: 10}
    assert not any(_running(pid) for pid, _ in ends.values())
