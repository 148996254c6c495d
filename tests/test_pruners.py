"""Pruner types on real Optuna studies: which trials each prunes at which validation, warm-up, spec checks."""

import optuna
import pytest

from harness.errors import SpecError
from harness.pruners import LatestMedianPruner, TrialWarmup, first_rung, make_pruner
from harness.spec import BudgetSpec, load_spec
from tests.conftest import spec_dict, write_spec

NO_DATA = {"train": "train.json", "validation": "validation.json"}
BUDGET = {"trials": 10, "max_steps": 200, "val_check_interval": 50, "warmup_fraction": 0.1}  # warm-up: 20 steps
STEPS = (50, 100, 150, 200)


def _spec(project, pruner: dict, **budget):
    spec = spec_dict(NO_DATA, budget={**BUDGET, **budget})
    spec["pruner"] = pruner  # whole: spec_dict's median keys would be refused for the other types
    return load_spec(write_spec(project, "pruned", spec))


def _pruned_at(study: optuna.Study, curve: tuple[float, ...], params: dict | None = None) -> int | None:
    """Run one trial through `curve` (a value per validation) as `callbacks.PruningReporter` does: report,
    then ask, except at the last validation; the step it was pruned at, or None (told COMPLETE)."""
    if params:
        study.enqueue_trial(params)
    trial = study.ask({"warmup_fraction": optuna.distributions.FloatDistribution(0.0, 0.9)} if params else None)
    for step, value in zip(STEPS, curve, strict=True):
        trial.report(value, step)
        if step < STEPS[-1] and trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return step
    study.tell(trial, curve[-1])
    return None


def test_successive_halving_keeps_the_best_third_at_rungs_on_validations(project):
    """Warm-up 20 steps, validations every 50: rung 0 at the first validation (50), rung 1 at 50 x 3 = 150."""
    pruner = make_pruner(_spec(project, {"type": "successive_halving"}))
    assert isinstance(pruner, TrialWarmup) and isinstance(pruner.inner, optuna.pruners.SuccessiveHalvingPruner)
    study = optuna.create_study(direction="minimize", pruner=pruner)
    assert _pruned_at(study, (0.5, 0.4, 0.3, 0.2)) is None  # the first at each rung is the best of one
    assert _pruned_at(study, (0.6, 0.1, 0.1, 0.1)) == 50  # worse than the only other at rung 0 (best of 2 goes on)
    # Third at rung 0: the best third of three is the best, which it is; at 100 no rung; at 150 it meets the
    # first trial's 0.3 with 0.35 and is pruned, although its 0.30 at 100 was as good.
    assert _pruned_at(study, (0.45, 0.30, 0.35, 0.2)) == 150


def test_successive_halving_rungs_follow_an_explicit_warm_up_and_the_reduction_factor(project):
    pruner = make_pruner(_spec(project, {"type": "successive_halving", "n_warmup_steps": 70, "reduction_factor": 2}))
    assert isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner)  # an explicit warm-up holds for every trial
    study = optuna.create_study(direction="minimize", pruner=pruner)
    assert _pruned_at(study, (0.5, 0.4, 0.3, 0.2)) is None
    # Rung 0 is the first validation after step 70 (100), rung 1 at 200, the last validation: never judged there.
    assert _pruned_at(study, (9.0, 0.6, 9.0, 9.0)) == 100
    assert _pruned_at(study, (9.0, 0.3, 9.0, 9.0)) is None
    assert first_rung(BudgetSpec(max_steps=200, val_check_interval=50), 0) == 50
    assert first_rung(BudgetSpec(max_steps=200, val_check_interval=50), 101) == 150
    assert first_rung(BudgetSpec(max_steps=120, val_check_interval=50), 130) == 120  # never past the budget


def test_hyperband_judges_each_bracket_at_its_own_rungs(project):
    """Budget 200 steps, first rung 50, factor 3: two brackets, rungs at 50 and 150, or at 150 only (450 is past
    the budget). A trial's bracket follows from its number; each is compared with its bracket's trials."""
    pruner = make_pruner(_spec(project, {"type": "hyperband"}))
    assert isinstance(pruner, TrialWarmup) and isinstance(pruner.inner, optuna.pruners.HyperbandPruner)
    study = optuna.create_study(study_name="hyperband", direction="minimize", pruner=pruner)
    # Each trial worse than every earlier one at every step (a tie would go on).
    pruned = [_pruned_at(study, (0.5 + k, 0.4 + k, 0.3 + k, 0.2 + k)) for k in range(8)]
    brackets = [pruner.inner._get_bracket_id(study, t) for t in study.trials]
    assert set(brackets) == {0, 1}, brackets
    for bracket, rung in ((0, 50), (1, 150)):
        numbers = [n for n, b in enumerate(brackets) if b == bracket]
        # The first trial of a bracket is the best of one there; every later one is worse and pruned at its rung.
        assert [pruned[n] for n in numbers] == [None] + [rung] * (len(numbers) - 1), (bracket, pruned, brackets)


def test_median_waits_for_each_trials_own_warm_up(project):
    """`n_warmup_steps: null`: the trial's learning-rate warm-up, `warmup_fraction` x max_steps (searched or
    the budget's); an explicit value holds for every trial."""
    pruner = make_pruner(_spec(project, {"type": "median", "n_startup_trials": 1}, warmup_fraction=0.3))
    study = optuna.create_study(direction="minimize", pruner=pruner)
    assert _pruned_at(study, (0.5, 0.4, 0.3, 0.2)) is None
    assert _pruned_at(study, (0.9, 0.9, 0.9, 0.9)) == 100  # warm-up 60 steps: not judged at 50
    assert _pruned_at(study, (0.9, 0.9, 0.9, 0.9), {"warmup_fraction": 0.6}) == 150  # its warm-up is 120 steps
    explicit = make_pruner(_spec(project, {"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0}))
    assert type(explicit) is LatestMedianPruner
    study = optuna.create_study(direction="minimize", pruner=explicit)
    assert _pruned_at(study, (0.5, 0.4, 0.3, 0.2)) is None
    assert _pruned_at(study, (0.9, 0.9, 0.9, 0.9), {"warmup_fraction": 0.6}) == 50


def test_no_pruner_for_none_or_a_pareto_sweep(project):
    assert type(make_pruner(_spec(project, {"type": "none", "compare": "best"}))) is optuna.pruners.NopPruner
    pareto = spec_dict(NO_DATA, budget=BUDGET, objective={"metric": "pareto"})
    pareto["pruner"] = {"type": "hyperband"}
    assert type(make_pruner(load_spec(write_spec(project, "pareto", pareto)))) is optuna.pruners.NopPruner


@pytest.mark.parametrize(
    ("pruner", "message"),
    [
        (
            {"type": "successive_halving", "compare": "best"},
            r"sweeps/pruned.yaml: `pruner.compare` applies to `pruner.type: median` only, and the type is "
            r"successive_halving; remove `pruner.compare`, or set the type it belongs to",
        ),
        ({"type": "hyperband", "n_startup_trials": 3}, r"`pruner.n_startup_trials` applies to `pruner.type: median`"),
        (
            {"type": "median", "reduction_factor": 3},
            r"`pruner.reduction_factor` applies to `pruner.type: successive_halving or hyperband` only",
        ),
        ({"type": "hyperband", "reduction_factor": 1}, r"`pruner.reduction_factor` is 1; it must be at least 2"),
        ({"type": "median", "n_warmup_steps": -1}, r"`pruner.n_warmup_steps` is -1; it must be at least 0"),
        ({"type": "asha"}, r"`pruner.type` is 'asha'; use one of median, successive_halving, hyperband, none"),
    ],
)
def test_pruner_keys_of_another_type_are_refused(project, pruner, message):
    with pytest.raises(SpecError, match=message):
        _spec(project, pruner)


def _filed(trial: optuna.trial.FrozenTrial, first: int, factor: int = 3) -> dict[int, float]:
    """The values a trial filed under successive-halving rungs (`completed_rung_<k>` system attrs), by the
    rung's step: rung k of a bracket whose first rung is `first` steps sits at `first * factor**k`."""
    prefix = "completed_rung_"
    return {
        first * factor ** int(key[len(prefix) :]): value
        for key, value in trial.system_attrs.items()
        if key.startswith(prefix)
    }


def test_successive_halving_files_a_long_warm_up_only_under_the_rungs_after_it(project):
    """Rungs at 50 and 150 (the budget's 20-step warm-up). A trial warming up for 120 steps is first judged at
    150: Optuna's pruner would file that one value under rung 0 (step 50) and rung 1 at once, so rung 0 would
    meet a value from 100 steps later. It goes under rung 1 only; rung 0 stays the trials judged at step 50."""
    pruner = make_pruner(_spec(project, {"type": "successive_halving"}))
    study = optuna.create_study(direction="minimize", pruner=pruner)
    assert _pruned_at(study, (0.5, 0.4, 0.3, 0.2)) is None
    assert _pruned_at(study, (0.9, 0.2, 0.1, 0.05), {"warmup_fraction": 0.6}) is None  # warm-up 120 steps
    # Warm-up 100 steps: not judged at 100 (no rung there), at 150 against 0.3 and 0.1 from that step.
    assert _pruned_at(study, (0.95, 0.25, 0.15, 0.1), {"warmup_fraction": 0.5}) == 150
    # Rung 0 holds 0.5 alone, so 0.45 is the best of two and goes on (against 0.1 from step 150 it would not);
    # at 150 it meets the warmed-up trials' values from that step, and is pruned.
    assert _pruned_at(study, (0.45, 0.3, 0.25, 0.2)) == 150
    filed = [_filed(trial, 50) for trial in study.trials]
    assert filed == [{50: 0.5, 150: 0.3}, {150: 0.1}, {150: 0.15}, {50: 0.45, 150: 0.25}], filed


def test_hyperband_files_a_long_warm_up_only_under_its_brackets_rungs_after_it(project):
    """Brackets with rungs at 50 and 150, or at 150 only. Every value a trial files is the one it reported at
    that rung's step, after its warm-up: none under a rung passed while it warmed up, none under two rungs."""
    pruner = make_pruner(_spec(project, {"type": "hyperband"}))
    study = optuna.create_study(study_name="hyperband", direction="minimize", pruner=pruner)
    warm_ups = [0.1, 0.6] * 6  # 20 or 120 steps
    for n, fraction in enumerate(warm_ups):
        _pruned_at(study, (0.9 - n / 100, 0.6 - n / 100, 0.3 - n / 100, 0.2), {"warmup_fraction": fraction})
    brackets = [pruner.inner._get_bracket_id(study, t) for t in study.trials]
    first_rungs = {0: 50, 1: 150}
    long_in_bracket_0 = [
        t for t, b in zip(study.trials, brackets, strict=True) if b == 0 and t.params["warmup_fraction"] == 0.6
    ]
    assert long_in_bracket_0, brackets  # the case under test occurs
    for trial, bracket in zip(study.trials, brackets, strict=True):
        filed = _filed(trial, first_rungs[bracket])
        warm_up = round(trial.params["warmup_fraction"] * 200)
        assert filed, (trial.number, bracket)  # every trial was judged at a rung after its warm-up
        assert all(step >= warm_up for step in filed), (trial.number, bracket, filed)
        assert filed == {step: trial.intermediate_values[step] for step in filed}, (trial.number, bracket, filed)
    assert all(_filed(t, 50) == {150: t.intermediate_values[150]} for t in long_in_bracket_0)
