"""Merging with the pretrained model (`merge_alpha`): the arithmetic on canary-tiny's real weights, a real trial
that judges every alpha and hands over the one the retention limit allows, and its export and reproduction."""

from __future__ import annotations

import dataclasses
import io

import optuna
import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from mlflow.tracking import MlflowClient
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState
from rich.console import Console

from harness.cli import main
from harness.directions import Direction
from harness.errors import SpecError
from harness.freezing import apply_freeze
from harness.merging import Interpolation, PretrainedWeights, choose_alpha, validate
from harness.model_source import resolve_model
from harness.objective import objective_names, objective_value, objective_values
from harness.report import write_report
from harness.report._blocks import Table, Text
from harness.report._front import front, front_blocks, front_plot, judged_models, merge_text
from harness.report._summary import SweepSummary
from harness.scoring import decode_manifest
from harness.search_space import format_param, load_search_space, merge_alphas
from harness.spec import load_spec
from harness.study import best_trial
from harness.sweep import Supervisor, reproduce_trial
from harness.training import restore_model
from harness.transcripts import ValidationTranscripts
from harness.trial import Result
from harness.trial_dir import TrialDir
from harness.trial_manifests import write_trial_manifests
from harness.trial_record import TrialRecord, model_params
from tests.conftest import SEARCH_SPACE, TEST_SPLITS, spec_dict, write_spec
from tests.helpers import load_study

# -- the search space -------------------------------------------------------------------------------------


def _space(tmp_path, entry):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"lr": SEARCH_SPACE["lr"], "merge_alpha": entry}))
    return path


@pytest.mark.parametrize(
    ("entry", "alphas"),
    [
        ({"type": "float", "low": 0.25, "high": 1.0, "grid": 4}, (0.25, 0.5, 0.75, 1.0)),
        ({"type": "float", "low": 0.3, "high": 0.9, "grid": 3}, (0.3, 0.6, 0.9, 1.0)),  # 1 is always judged
        ({"type": "categorical", "choices": [0.5, 0.0]}, (0.0, 0.5, 1.0)),
    ],
)
def test_merge_alpha_is_judged_at_every_value_not_sampled(tmp_path, entry, alphas):
    path = _space(tmp_path, entry)
    assert merge_alphas(path) == alphas
    assert set(load_search_space(path)) == {"lr"}  # Optuna never samples it


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"type": "float", "low": 0.3, "high": 1.0}, r"`merge_alpha.grid` is None; give the number of evenly spaced"),
        ({"type": "float", "low": 0.3, "high": 1.0, "grid": 1}, r"`merge_alpha.grid` is 1"),
        (
            {"type": "float", "low": 0.3, "high": 1.5, "grid": 3},
            r"`merge_alpha.high` is 1.5, but `merge_alpha` must be",
        ),
        (
            {"type": "categorical", "choices": [0.5, 2]},
            r"choice 2 is not allowed; `merge_alpha` must be a number from 0",
        ),
        ({"type": "float", "low": 0.3, "high": 1.0, "log": True, "grid": 3}, r"judged at every value after training"),
        ({"type": "float", "low": 0.0, "high": 1.0, "grid": 30000}, r"closer than 4 significant digits"),
    ],
)
def test_a_bad_merge_alpha_entry_names_the_key_and_the_fix(tmp_path, entry, message):
    with pytest.raises(SpecError, match=message):
        merge_alphas(_space(tmp_path, entry))


def test_grid_belongs_to_the_judged_knob_only(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"lr": {**SEARCH_SPACE["lr"], "grid": 3}}))
    with pytest.raises(SpecError, match=r"`lr` has unknown keys \['grid'\]"):
        load_search_space(path)


# -- the choice -------------------------------------------------------------------------------------------

BASELINE = {"val_wer": 0.9, "retention_wer": 0.05}


def _figures(val_wer: float, retention_wer: float) -> dict[str, float]:
    return {"val_wer": val_wer, "retention_wer": retention_wer}


@pytest.mark.parametrize(
    ("limit", "figures", "chosen"),
    [
        # Within 0.10 of the baseline's 0.05: alphas 0 and 0.5; 0.5 learns more.
        (0.10, {0.0: _figures(0.9, 0.05), 0.5: _figures(0.3, 0.12), 1.0: _figures(0.05, 0.9)}, 0.5),
        # No limit: the fine-tuned model as trained, however much it forgets.
        (None, {0.0: _figures(0.9, 0.05), 0.5: _figures(0.3, 0.12), 1.0: _figures(0.05, 0.9)}, 1.0),
        # Nothing within: the least forgetting, so the constraint says by how little it failed.
        (0.01, {0.5: _figures(0.3, 0.12), 0.75: _figures(0.1, 0.3), 1.0: _figures(0.05, 0.9)}, 0.5),
        # A tie on the objective: the smaller retention increase.
        (0.5, {0.5: _figures(0.1, 0.12), 0.75: _figures(0.1, 0.3), 1.0: _figures(0.05, 0.9)}, 0.5),
        # One alpha judged (a reproduction): that one, even over the limit.
        (0.01, {0.75: _figures(0.1, 0.3)}, 0.75),
    ],
)
def test_the_trial_hands_over_the_best_alpha_within_the_retention_limit(
    project, speech_data, retention_data, limit, figures, chosen
):
    assert choose_alpha(figures, _limited(project, speech_data, retention_data, limit), BASELINE) == chosen


def test_without_the_baselines_retention_wer_the_limit_cannot_choose_and_alpha_1_stays(
    project, speech_data, retention_data
):
    spec = _limited(project, speech_data, retention_data, 0.1)
    figures = {0.5: _figures(0.3, 0.12), 1.0: _figures(0.05, 0.9)}
    assert choose_alpha(figures, spec, None) == 1.0


def _limited(project, speech_data, retention_data, limit):
    overrides = {"data": {"retention": [str(retention_data)]}, "budget": {"baseline": True}}
    return load_spec(
        write_spec(
            project, "limited", spec_dict(speech_data, objective={"retention_max_wer_increase": limit}, **overrides)
        )
    )


# -- the pareto objective over the retention WER ------------------------------------------------------------


def test_pareto_retention_weighs_the_retention_wer_as_a_second_objective(project, speech_data, retention_data):
    data = {"data": {"retention": [str(retention_data)]}}
    spec = load_spec(write_spec(project, "two", spec_dict(speech_data, objective={"pareto_retention": True}, **data)))
    assert spec.directions == [Direction.MINIMIZE, Direction.MINIMIZE] and spec.multi_objective
    assert objective_names(spec.objective) == ["wer", "retention_wer"]
    assert objective_values({"val_wer": 0.1, "retention_wer": 0.2}, spec.objective) == [0.1, 0.2]
    assert objective_value({"val_wer": 0.1}, spec.objective) == 0.1  # a validation alone: pruning, history
    with pytest.raises(SpecError, match=r"`objective.pareto_retention` makes the retention WER an objective, but"):
        load_spec(write_spec(project, "none", spec_dict(speech_data, objective={"pareto_retention": True})))
    both = {"metric": "pareto", "pareto_retention": True}
    with pytest.raises(SpecError, match=r"`objective.metric` is `pareto` \(two already\)"):
        load_spec(write_spec(project, "three", spec_dict(speech_data, objective=both, **data)))


# -- the report ---------------------------------------------------------------------------------------------

ZERO_SHOT = {"val_wer": 0.9, "retention_wer": 0.05}  # limit 0.1: retention WER up to 0.15 keeps within


def _judged(number, replay, merges, alpha):
    figures = {a: _figures(*f) for a, f in merges.items()}
    chosen = figures[alpha]
    return optuna.trial.create_trial(
        params={"lr": 1e-3, "replay_fraction": replay},
        distributions={"lr": FloatDistribution(1e-4, 1e-2), "replay_fraction": FloatDistribution(0.0, 0.5)},
        value=chosen["val_wer"],
        user_attrs=TrialRecord.attrs(final=chosen, merge_alpha=alpha, merges={f"{a:g}": f for a, f in figures.items()}),
        constraints={"retention_wer_increase": chosen["retention_wer"] - ZERO_SHOT["retention_wer"] - 0.1},
    )


def test_the_report_draws_every_merge_and_names_what_each_lever_bought(project, speech_data, retention_data, tmp_path):
    spec = _limited(project, speech_data, retention_data, 0.1)
    study = optuna.create_study()
    study.add_trial(_judged(0, 0.0, {0.5: (0.30, 0.10), 1.0: (0.05, 0.90)}, 0.5))
    study.add_trial(_judged(1, 0.3, {0.5: (0.20, 0.12), 0.75: (0.10, 0.16), 1.0: (0.06, 0.14)}, 1.0))
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, params={}, distributions={}))
    summary = SweepSummary(study, study.trials, best_trial(study), ZERO_SHOT)
    models = judged_models(spec, summary)
    assert len(models) == 5  # the pruned trial was neither merged nor scored
    on_front = {(m.trial, m.alpha) for m in front(models, summary.direction.sign)}
    assert on_front == {(0, 0.5), (0, 1.0), (1, 0.5), (1, 1.0)}  # trial 1 at 0.75 is beaten on both by its alpha 1

    page = " ".join(block.text for block in front_blocks(spec, summary) if isinstance(block, Text))
    assert "5 models: the fine-tunes of 2 complete trials as trained (alpha 1) and 3 merges" in page
    assert "4 are on the front" in page
    assert "limit (retention WER <= 0.1500: zero-shot 0.0500 + 0.1), the best model is trial-0001 at alpha 1." in page
    (table,) = [block for block in front_blocks(spec, summary) if isinstance(block, Table)]
    assert table.rows == [
        ["all levers", "trial-0001 at alpha 1", "0.0600", "0.1400", "+0.0900"],
        ["no merge (alpha 1)", "trial-0001 at alpha 1", "0.0600", "0.1400", "+0.0900"],
        ["no replay (replay_fraction 0)", "trial-0000 at alpha 0.5", "0.3000", "0.1000", "+0.0500"],
        ["neither lever", "none keeps within the limit", "", "", ""],
    ]
    plot = front_plot(spec, summary, tmp_path)
    assert plot.path is not None and plot.path.is_file() and plot.figure is not None
    axes = plot.figure.axes[0]
    assert sum(len(c.get_offsets()) for c in axes.collections) == 5 + 1 + 1  # models, the one handed over, zero-shot
    assert "weights are the fine-tune's as trained (`merge_alpha` 1, chosen after training among 0.5, 0.75, 1)" in (
        merge_text(summary.best)
    )
    assert "(1 - 0.5) x the pretrained model's + 0.5 x the fine-tuned ones (`merge_alpha` 0.5, chosen" in (
        merge_text(study.trials[0])
    )


# -- the arithmetic, on canary-tiny's real weights ---------------------------------------------------------


def test_merges_are_exact_at_both_ends_and_touch_only_what_trained(project, tiny_nemo, speech_data):
    """Frozen encoder: theta_0 holds only what trains (the decoder) and BatchNorm statistics; alpha 0 is the
    pretrained model bit for bit (its decode is the pretrained model's), alpha 1 the "fine-tuned" one."""
    from nemo.collections.asr.models import EncDecMultiTaskModel

    model = EncDecMultiTaskModel.restore_from(str(tiny_nemo), map_location="cpu")
    original = {k: v.clone() for k, v in model.state_dict().items()}
    apply_freeze(model, "encoder")
    snapshot = PretrainedWeights()
    snapshot.on_train_start(Trainer(accelerator="cpu", devices=1, logger=False), model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith("encoder.") for n in trainable)
    assert set(snapshot.tensors) == trainable  # the frozen encoder (its BatchNorm statistics too) is not copied

    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a stand-in fine-tune of the decoder
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * 0.01)
    tuned = {k: v.clone() for k, v in model.state_dict().items()}
    interpolation = Interpolation(model, snapshot.tensors)
    assert interpolation.changed == len(trainable)  # buffers that did not change are not merged

    interpolation.apply(model, 0.0)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in original.items())
    interpolation.apply(model, 1.0)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in tuned.items())
    interpolation.apply(model, 0.25)
    for name in trainable:
        expected = original[name] + 0.25 * (tuned[name] - original[name])
        torch.testing.assert_close(model.state_dict()[name], expected)

    interpolation.apply(model, 0.0)
    manifest = write_trial_manifests(load_spec(write_spec(project, "exact", spec_dict(speech_data)))).validation
    pretrained = EncDecMultiTaskModel.restore_from(str(tiny_nemo), map_location="cpu")
    merged, fresh = (decode_manifest(m.eval(), manifest, "text") for m in (model, pretrained))
    assert merged == fresh


# -- a real trial ------------------------------------------------------------------------------------------

LIMIT = 0.0  # alpha 0 (the pretrained model) always keeps within it; the fine-tune below does not
FORGETFUL = {"lr": 3e-3, "batch_duration": 20, "freeze": "none", "use_loss_mask_for_prompt": True}
# 0.05 decodes like the pretrained model after 20 steps: on a tie the larger alpha, a real merge, is handed over.
ALPHAS = {"type": "categorical", "choices": [0.0, 0.05, 0.5]}


@pytest.mark.extended  # a baseline, a 20-step trial judged at 4 alphas, report, reproduction (~2 min, 2 cores)
def test_a_trial_judges_every_alpha_and_hands_over_the_merge_the_limit_allows(
    project, speech_data, retention_data, tmp_path
):
    (project / "search_spaces" / "test.yaml").write_text(yaml.safe_dump({**SEARCH_SPACE, "merge_alpha": ALPHAS}))
    spec_data = spec_dict(
        speech_data,
        data={"retention": [str(retention_data)]},
        budget={"trials": 1, "baseline": True},
        objective={"retention_max_wer_increase": LIMIT},
        pruner={"type": "none"},
        training={"keep_checkpoints": "best"},
        start_from=[FORGETFUL],
    )
    spec = load_spec(write_spec(project, "merged", spec_data))
    Supervisor(spec, console=Console(file=io.StringIO(), width=200)).run()
    study = load_study(spec)
    (trial,) = study.get_trials()
    record, baseline = TrialRecord.of(trial), study.user_attrs["baseline"]
    result = Result.read(TrialDir.of(spec, trial.number))
    assert result is not None and result.merges == record.merges
    merges = {float(alpha): figures for alpha, figures in record.merges.items()}
    assert sorted(merges) == [0.0, 0.05, 0.5, 1.0]

    # Alpha 0 is the pretrained model: its figures are the zero-shot baseline's, exactly. Alpha 1 is the fine-tune
    # as trained: its last validation.
    for name, value in baseline.items():
        assert merges[0.0][name] == value, name
    last = {k: v for k, v in result.history[-1].items() if k != "step"}
    assert {k: merges[1.0][k] for k in last} == last

    # The limit rule, applied here by hand: the best val WER among the alphas whose retention WER rose <= LIMIT.
    increase = {a: f["retention_wer"] - baseline["retention_wer"] for a, f in merges.items()}
    assert increase[1.0] > LIMIT, "the fine-tune kept the old domain: this test needs one that forgets"
    within = [a for a in merges if increase[a] <= LIMIT]
    chosen = min(within, key=lambda a: (merges[a]["val_wer"], increase[a], -a))
    assert record.merge_alpha == chosen and model_params(trial)["merge_alpha"] == chosen
    assert record.final == merges[chosen] and trial.value == merges[chosen]["val_wer"]
    assert trial.constraints["retention_wer_increase"] == pytest.approx(increase[chosen] - LIMIT)

    # MLflow: the alpha as a param, every alpha's figures as metrics, the handed-over figures as the trial's.
    run = MlflowClient(spec.tracking_uri).get_run(record.mlflow_run_id)
    assert run.data.params["merge_alpha"] == f"{chosen:.4g}"
    for alpha, figures in record.merges.items():
        assert run.data.metrics[f"merge/alpha_{alpha}/val_wer"] == figures["val_wer"]
        assert run.data.metrics[f"merge/alpha_{alpha}/retention_wer"] == figures["retention_wer"]
    assert run.data.metrics["objective"] == trial.value and run.data.metrics["merge_seconds"] > 0

    # The exported model is the scored merge: its validation decode gives the recorded figures.
    out = tmp_path / "merged.nemo"
    assert main(["export", "merged", "--out", str(out)]) == 0
    exported = restore_model(out, _config(spec, trial.number), None)
    figures, _ = validate(exported, spec, ValidationTranscripts(spec.behaviours))
    assert {k: figures[k] for k in ("val_wer", "val_bleu")} == {k: record.final[k] for k in ("val_wer", "val_bleu")}

    # The report: the front of every alpha, the best model within the limit, the alpha among the params.
    files = write_report(spec, html_report=False)
    page = files.markdown.read_text()
    assert "## New domain against old: merges and the front" in page
    assert f"the best model is trial-0000 at alpha {chosen:g}." in page
    assert (files.directory / "plots" / "merge_front.png").is_file()
    assert files.best_config is not None and f"merge_alpha={format_param(chosen)}" in files.best_config.read_text()

    # Reproduce trains again and merges at the recorded alpha: the same figures on the same machine.
    original, again = reproduce_trial(spec, None, Console(file=io.StringIO(), width=200))
    assert again == original


@pytest.mark.extended  # a 2-rank trial judged at 4 alphas (~1 min on 2 cores)
def test_under_ddp_rank_0_alone_judges_the_merges_after_the_other_rank_ends(project, speech_data, retention_data):
    (project / "search_spaces" / "test.yaml").write_text(yaml.safe_dump({**SEARCH_SPACE, "merge_alpha": ALPHAS}))
    spec_data = spec_dict(
        speech_data,
        data={"retention": [str(retention_data)]},
        budget={"trials": 1},
        pruner={"type": "none"},
        training={"accelerator": "cpu", "devices": 2, "keep_checkpoints": "best"},
        start_from=[FORGETFUL],
    )
    spec = load_spec(write_spec(project, "ddp-merged", spec_data))
    Supervisor(spec, console=Console(file=io.StringIO(), width=200)).run()
    (trial,) = load_study(spec).get_trials()
    record = TrialRecord.of(trial)
    assert sorted(record.merges, key=float) == ["0", "0.05", "0.5", "1"] and record.merge_alpha == 1.0  # no limit
    assert TrialDir.of(spec, trial.number).model.is_file()  # saved by rank 0 after the process group was destroyed
    log = TrialDir.of(spec, trial.number).log.read_text()
    assert log.count("harness merges:") == 1  # rank 0 alone
    # The whole validation set decoded on rank 0 alone (not its DDP shard): alpha 0's figures are the pretrained
    # model's, which a one-process decode of the same lines gives.
    pretrained = restore_model(resolve_model(spec.model), _config(spec, trial.number), None)
    figures, lines = validate(
        pretrained,
        dataclasses.replace(spec, training=dataclasses.replace(spec.training, devices=1)),
        ValidationTranscripts(),
    )
    assert len(lines) == TEST_SPLITS["validation"]
    assert {k: record.merges["0"][k] for k in ("val_wer", "val_bleu")} == {
        k: figures[k] for k in ("val_wer", "val_bleu")
    }


def _config(spec, number):
    from omegaconf import OmegaConf

    return OmegaConf.load(TrialDir.of(spec, number).config)
