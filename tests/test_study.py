"""Pruning decisions, the supervisor's footprint, and what defines a study, on real Optuna studies."""

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from harness.cli import main
from harness.definition import DEFINITION_ATTR, study_uid
from harness.errors import DefinitionError
from harness.pruners import LatestMedianPruner, TrialWarmup, make_pruner
from harness.samplers import TrialSeededSampler, make_sampler
from harness.search_space import load_search_space
from harness.spec import load_spec
from harness.study import (
    MEMORY_CONSTRAINT,
    RETENTION_CONSTRAINT,
    best_trial,
    no_best_reason,
    open_storage,
    open_study,
    set_retention_constraint,
    tell_out_of_memory,
)
from harness.sweep_stores import check_sweep_stores, open_sweep_stores
from harness.tracking import UID_TAG, Tracker
from tests.conftest import SEARCH_SPACE, spec_dict, write_spec
from tests.helpers import proposals_that_run_out_of_memory


def _study_with_two_finished_curves(pruner) -> optuna.Study:
    """Two complete trials whose WER falls 0.8 -> 0.6 -> 0.4 and 0.7 -> 0.5 -> 0.3."""
    study = optuna.create_study(direction="minimize", pruner=pruner)
    for curve in ((0.8, 0.6, 0.4), (0.7, 0.5, 0.3)):
        trial = study.ask()
        for step, value in zip((10, 20, 30), curve, strict=True):
            trial.report(value, step)
        study.tell(trial, curve[-1])
    return study


def _prune_decisions(study: optuna.Study, curve: tuple[float, ...]) -> list[bool]:
    trial = study.ask()
    decisions = []
    for step, value in zip((10, 20, 30), curve, strict=False):
        trial.report(value, step)
        decisions.append(bool(trial.should_prune()))
    return decisions


@pytest.mark.parametrize("compare", ["latest", "best"])
def test_a_climbing_wer_is_pruned_only_when_comparing_the_latest_value(compare):
    pruner = LatestMedianPruner(n_startup_trials=2) if compare == "latest" else optuna.pruners.MedianPruner(2)
    study = _study_with_two_finished_curves(pruner)
    # Good at the first validation (0.5 < median 0.75), then the decoder starts to hallucinate.
    decisions = _prune_decisions(study, (0.5, 1.4, 2.0))
    assert decisions[0] is False
    assert decisions[1] is (compare == "latest")


def test_latest_median_pruner_keeps_a_trial_that_stays_below_the_median():
    study = _study_with_two_finished_curves(LatestMedianPruner(n_startup_trials=2))
    assert _prune_decisions(study, (0.6, 0.5, 0.3)) == [False, False, False]
    assert _prune_decisions(study, (0.9,)) == [True]


def test_the_spec_chooses_the_pruner(project, speech_data):
    def pruner(**overrides):
        return make_pruner(load_spec(write_spec(project, "p", spec_dict(speech_data, pruner=overrides))))

    assert type(pruner()) is LatestMedianPruner  # spec_dict sets `n_warmup_steps: 0`
    assert type(pruner(compare="best")) is optuna.pruners.MedianPruner
    assert type(pruner(type="none")) is optuna.pruners.NopPruner
    default = pruner(n_warmup_steps=None, compare=None)  # the trial's warm-up, `compare: latest`
    assert type(default) is TrialWarmup and type(default.inner) is LatestMedianPruner


def test_the_supervisor_does_not_import_torch_or_lightning():
    """Trials train in their own processes; the supervisor stays small (about 190 MiB, not 670)."""
    code = "import sys, harness.cli, harness.sweep; print(sorted({'torch', 'lightning', 'nemo'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_proposals_follow_the_trial_number_not_the_process():
    """Same study seed: the same params for each trial number (any machine, any resume); trials
    asked concurrently (distinct numbers) draw differently."""
    space = {"lr": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True)}

    def proposals(asks: int) -> list[float]:
        sampler = TrialSeededSampler(lambda seed: optuna.samplers.TPESampler(seed=seed, n_startup_trials=4), 0)
        study = optuna.create_study(sampler=sampler)
        return [study.ask(space).params["lr"] for _ in range(asks)]  # none told: all run at once

    first, again = proposals(4), proposals(4)
    assert first == again
    assert len(set(first)) == 4


def test_out_of_memory_steers_the_sampler_away_from_params_that_do_not_fit(project):
    """Told PRUNED with its memory constraint violated, an OOM is what TPE learns from (it skips
    FAIL trials altogether): it proposes sizes that run out far less often than when each OOM is a
    FAIL, which leaves TPE chasing the larger, better-scoring batches into the same wall."""
    spec = load_spec(write_spec(project, "memory", spec_dict(NO_DATA, budget={"trials": 20})))
    trial = (study := optuna.create_study()).ask()
    tell_out_of_memory(study, trial)
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED
    assert study.trials[0].constraints == {MEMORY_CONSTRAINT: 1.0}

    seeds = (0, 1, 2)
    build = lambda s: make_sampler(spec, s)  # noqa: E731
    steered = sum(proposals_that_run_out_of_memory(build, seed, trials=20) for seed in seeds)
    blind = sum(proposals_that_run_out_of_memory(build, seed, trials=20, infeasible=False) for seed in seeds)
    assert steered * 2 <= blind, (steered, blind)


def test_a_trial_is_never_pruned_at_its_last_validation():
    """Its steps are spent by then: pruning it would only throw its value away."""
    from types import SimpleNamespace

    from harness.callbacks import PruningReporter

    study = _study_with_two_finished_curves(LatestMedianPruner(n_startup_trials=2))
    reporter = PruningReporter(study.ask(), objective=lambda metrics: metrics["val_wer"])
    trainer = SimpleNamespace(
        sanity_checking=False, global_step=10, max_steps=30, should_stop=False, is_global_zero=True, world_size=1
    )
    for step, wer in ((10, 0.5), (20, 0.4), (30, 0.9)):  # worse than the median (0.35) only at the end
        trainer.global_step, trainer.callback_metrics = step, {"val_wer": wer}
        reporter.on_validation_end(trainer, None)
    assert reporter.pruned_at is None and not trainer.should_stop
    assert reporter.trial.should_prune()  # the pruner alone would have pruned it


# -- what defines a study: a resumed sweep must still be the same sweep ---------------------------

PARAMS = {"lr": 1e-3, "batch_duration": 10, "freeze": "none", "use_loss_mask_for_prompt": True}
NO_DATA = {"train": "train.json", "validation": "validation.json"}  # every check here stops before preflight


def _started_sweep(project, name: str, **overrides):
    """A sweep whose stores are open and whose study holds one complete trial (WER 0.3)."""
    spec = load_spec(write_spec(project, name, spec_dict(NO_DATA, **overrides)))
    space = load_search_space(spec.search_space)
    study = open_sweep_stores(spec, space, params={}, tags={}).study
    study.add_trial(optuna.trial.create_trial(params=PARAMS, distributions=space, value=0.3))
    return spec, space


def _fails(capsys, *args: str) -> str:
    assert main(list(args)) == 2
    out = capsys.readouterr().out
    assert out.startswith("error:") and "Traceback" not in out, out
    return " ".join(out.split())


def test_a_changed_objective_stops_the_resumed_sweep_and_its_report(project, capsys):
    """A resumed sweep whose objective changed direction (wer -> bleu) stops, and so does its report."""
    spec, space = _started_sweep(project, "obj")
    write_spec(project, "obj", spec_dict(NO_DATA, objective={"metric": "bleu"}))

    out = _fails(capsys, "sweep", "obj")
    assert (
        "sweeps/obj.yaml: the objective is now bleu (maximize), but sweep 'obj' was created for wer (minimize)" in out
    )
    assert f"study 'obj' in {spec.state_dir / 'optuna.db'}, 1 trial" in out
    assert "copy sweeps/obj.yaml to sweeps/<new-name>.yaml and run `harness sweep <new-name>`" in out
    report = _fails(capsys, "report", "obj")
    assert "the objective is now bleu (maximize)" in report and "(bleu, minimize)" not in report
    with pytest.raises(DefinitionError, match="objective is now bleu"):
        open_study(load_spec("obj"), pruner=optuna.pruners.NopPruner())  # a trial process of the changed spec

    # The same direction is no excuse: WER as written and normalised WER are different rankings.
    write_spec(project, "obj", spec_dict(NO_DATA, objective={"metric": "wer_normalized"}))
    assert "now wer_normalized (minimize), but sweep 'obj' was created for wer (minimize)" in _fails(
        capsys, "sweep", "obj"
    )
    write_spec(project, "obj", spec_dict(NO_DATA))  # put back: the sweep is itself again
    check_sweep_stores(load_spec("obj"), space)


def test_a_changed_search_space_stops_the_resumed_sweep(project, capsys):
    spec, _ = _started_sweep(project, "space")
    changed = {k: v for k, v in SEARCH_SPACE.items() if k != "freeze"}
    changed["lr"] = {"type": "float", "low": 1e-5, "high": 1e-2, "log": True}
    changed["weight_decay"] = {"type": "float", "low": 0.0, "high": 0.1}
    Path(spec.search_space).write_text(yaml.safe_dump(changed))

    out = _fails(capsys, "sweep", "space")
    assert f"{spec.search_space} changed since sweep 'space' was created" in out
    assert "`weight_decay` added; `freeze` removed; `lr` was 0.0005..0.003 log, is now 1e-05..0.01 log" in out
    assert "Put the search space back to use this sweep" in out


def test_a_study_made_by_an_older_harness_is_checked_then_adopted(project):
    """It records no definition: its directions and its trials' distributions stand in for it."""
    spec = load_spec(write_spec(project, "old", spec_dict(NO_DATA)))
    space = load_search_space(spec.search_space)
    study = optuna.create_study(study_name="old", storage=open_storage(spec.storage_url), direction="minimize")
    study.add_trial(optuna.trial.create_trial(params=PARAMS, distributions=space, value=0.3))

    bleu = load_spec(write_spec(project, "old", spec_dict(NO_DATA, objective={"metric": "bleu"})))
    with pytest.raises(DefinitionError, match=r"created for an objective \(minimize\)"):
        open_study(bleu, space, pruner=optuna.pruners.NopPruner())
    # Its parent run, linked by run id only, is kept and tagged with the uid the study now gets.
    tracker = Tracker(spec.tracking_uri, spec.experiment_name)
    old_tags = {"harness.role": "sweep", "harness.sweep": "old", "harness.study_key": "sqlite:///...#old#1"}
    legacy = tracker.client.create_run(tracker.experiment_id, run_name="old", tags=old_tags).info.run_id
    study.set_user_attr("mlflow_parent_run_id", legacy)
    resumed = open_sweep_stores(spec, space, params={}, tags={})
    assert resumed.study.user_attrs[DEFINITION_ATTR]["objective"] == "wer"
    assert resumed.study.metric_names is None  # it opens without objective names, as it was created
    assert resumed.parent_run == legacy
    assert tracker.client.get_run(legacy).data.tags[UID_TAG] == study_uid(resumed.study)


@pytest.mark.parametrize(
    ("objective", "names"),
    [
        ({"metric": "wer"}, ["wer"]),
        ({"metric": "pareto"}, ["wer", "bleu"]),
        ({"metric": "mix", "bleu_weight": 0.5}, ["wer - 0.5 * bleu"]),
    ],
)
def test_the_study_names_its_objectives(project, objective, names):
    """optuna-dashboard on the same storage titles the objective `wer`, not "Objective 0"."""
    spec = load_spec(write_spec(project, "named", spec_dict(NO_DATA, objective=objective)))
    open_study(spec, load_search_space(spec.search_space), pruner=optuna.pruners.NopPruner())
    assert optuna.load_study(study_name="named", storage=open_storage(spec.storage_url)).metric_names == names


# -- the retention constraint: a complete trial that forgot its old domain is infeasible ------------


def _tell_complete(study: optuna.Study, values: float | list[float], excess: float) -> None:
    trial = study.ask()
    set_retention_constraint(trial, excess)
    study.tell(trial, values)


def test_best_trial_skips_infeasible_trials_and_is_none_when_none_is_feasible():
    """Optuna 5's `study.best_trial` raises ValueError when every complete trial is infeasible; the
    harness's callers (report, export, test set, checkpoint retention) read None and say why."""
    study = optuna.create_study(direction="minimize")
    _tell_complete(study, 0.10, excess=0.02)  # the lowest WER, but it forgets: infeasible
    assert best_trial(study) is None
    assert (
        no_best_reason(study) == f"no feasible trial: all 1 complete trials break a constraint ({RETENTION_CONSTRAINT})"
    )
    with pytest.raises(ValueError, match="No feasible trials"):
        _ = study.best_trial
    _tell_complete(study, 0.30, excess=-0.01)
    _tell_complete(study, 0.20, excess=0.0)  # exactly at the limit: feasible
    best = best_trial(study)
    assert best is not None and best.number == 2 and best.constraints == {RETENTION_CONSTRAINT: 0.0}
    assert no_best_reason(optuna.create_study()) == "no trial has completed yet"

    pareto = optuna.create_study(directions=["minimize", "maximize"])
    _tell_complete(pareto, [0.1, 0.9], excess=1.0)
    assert best_trial(pareto) is None  # `best_trials` is empty: min() over it would raise
    _tell_complete(pareto, [0.5, 0.2], excess=-1.0)
    assert best_trial(pareto).number == 1


def test_a_changed_retention_limit_stops_the_resumed_sweep(project, capsys):
    """Its complete trials were judged feasible or not under the limit it was created with."""
    retention = {"retention": ["retention.json"]}
    spec, space = _started_sweep(
        project, "keep", data=retention, budget={"baseline": True}, objective={"retention_max_wer_increase": 0.05}
    )
    write_spec(project, "keep", spec_dict(NO_DATA, data=retention, budget={"baseline": True}))
    out = _fails(capsys, "sweep", "keep")
    assert (
        "sweeps/keep.yaml: `objective.retention_max_wer_increase` is now no limit, but sweep 'keep' was created "
        "with 0.05 (study 'keep' in"
    ) in out
    assert "Put the limit back to use this sweep" in out
    limit = {"retention_max_wer_increase": 0.05}
    write_spec(project, "keep", spec_dict(NO_DATA, data=retention, budget={"baseline": True}, objective=limit))
    check_sweep_stores(load_spec("keep"), space)
