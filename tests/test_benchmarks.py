"""Smoke runs of every benchmark (`--smoke`: a few steps, two pairs, one or two trials), and the checks that
keep the side-by-side benchmarks measuring one trained trial against one bare run.

The smokes check that each benchmark runs end to end on the demo spec as shipped and prints its figures with
the ratio last, never speed: the real figures come from the full runs recorded in benchmarks/RESULTS.md.
"""

import importlib
import re

import pytest

# The ones that train (or time) trials take minutes together: `make test-extended` runs them (marker
# `extended`), keeping `make test` under its 15 minutes; batch_fill runs in every `make test`.
TRAINING = ["overhead", "throughput", "pruning", "memory", "samplers", "startup", "decision", "status"]
SIDE_BY_SIDE = {"overhead", "throughput", "startup"}
BENCHMARKS = [pytest.param(name, marks=pytest.mark.extended) for name in TRAINING] + ["batch_fill"]
RESULT = re.compile(r"^RESULT .+ = -?\d+\.\d+.* \(target .+\): (met|NOT met)$")


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_smoke_prints_figures_and_ratio_last(name, terse_data, capsys, tmp_path):
    """On data shaped like the demo's (the demo spec declares the `terse` behaviour). The side-by-side ones run
    two pairs on the demo spec with its `start_from`: a sweep feature that made a pair train twice, or answered
    the second pair from the first, broke them silently once."""
    from benchmarks.project import DEMO_SPEC, Project

    argv = ["--smoke", "--data", str(terse_data["train"].parent)]
    if name in SIDE_BY_SIDE:
        assert Project("check").demo["start_from"], f"{DEMO_SPEC} lost its start_from: give this smoke a spec with one"
        argv += ["--repetitions", "2"]
    if name == "decision":
        argv += ["--collect", str(tmp_path / "pool.json")]
    module = importlib.import_module(f"benchmarks.{name}")
    assert module.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert RESULT.match(lines[-1]), lines[-1]
    assert any(re.search(r"\d+\.\d+", line) for line in lines[:-1])
    assert any(line.startswith("load at end ") for line in lines)
    if name in SIDE_BY_SIDE:
        pairs = [line for line in lines if re.match(r"\s+pair \d/2: .* 3 steps each, one trial trained", line)]
        assert len(pairs) == 2, lines


def _frozen(number: int, params: dict, **attrs):
    """A finished trial of the demo space, as the supervisor records one (its user attrs)."""
    import optuna

    from benchmarks.project import demo_search_space
    from harness.search_space import load_search_space

    space = load_search_space(demo_search_space())
    trial = optuna.trial.create_trial(
        params=params, distributions={k: space[k] for k in params}, value=0.5, user_attrs=attrs
    )
    trial.number = number
    return trial


class _Study:
    """The one call `one_trained_trial` makes on a study."""

    def __init__(self, *trials) -> None:
        self.trials = list(trials)

    def get_trials(self, deepcopy: bool = True):
        return self.trials


def test_a_pair_whose_sweep_ran_more_a_repeat_or_other_params_fails_the_benchmark():
    """The two ways the demo's `start_from` and repeats broke the benchmarks, and a third: each is refused."""
    from benchmarks.project import BenchmarkMismatch, demo_search_space, fixed_params
    from benchmarks.sidebyside import one_trained_trial

    ours = fixed_params(demo_search_space())
    other = {**ours, "lr": 2e-3}
    trained = _frozen(0, ours, trial_pid=11, steps=3)
    assert one_trained_trial(_Study(trained), ours) is trained
    with pytest.raises(BenchmarkMismatch, match="ran 2 trials"):  # start_from ran first
        one_trained_trial(_Study(_frozen(0, other, trial_pid=10, start_from=0), _frozen(1, ours, trial_pid=11)), ours)
    with pytest.raises(BenchmarkMismatch, match="without training"):  # answered from an earlier result
        one_trained_trial(_Study(_frozen(1, ours, repeat_of=0)), ours)
    with pytest.raises(BenchmarkMismatch, match="trained .* the bare side trains"):
        one_trained_trial(_Study(_frozen(0, other, trial_pid=11)), ours)


def test_a_side_that_trained_other_steps_or_another_config_fails_the_benchmark(tmp_path):
    from benchmarks.project import BenchmarkMismatch
    from benchmarks.sidebyside import expect_steps, same_config

    expect_steps("harness", 3, recorded=3, result_json=3, probe=3)
    with pytest.raises(BenchmarkMismatch, match="probe': 6"):
        expect_steps("harness", 3, recorded=3, result_json=3, probe=6)
    harness, bare = tmp_path / "harness.yaml", tmp_path / "bare.yaml"
    harness.write_text("optim:\n  lr: 0.001\n")
    bare.write_text("optim:\n  lr: 0.001\n")
    same_config(bare, harness)
    bare.write_text("optim:\n  lr: 0.002\n")
    with pytest.raises(BenchmarkMismatch, match=r"(?s)-  lr: 0.001.*\+  lr: 0.002"):
        same_config(bare, harness)


def test_each_pair_is_a_sweep_of_its_own_with_one_trial_of_the_measured_params(terse_data):
    """The demo spec as shipped, its `start_from` replaced by the benchmark's params, a budget of one trial and a
    study per pair (so no pair can be answered from another's result); the rest of the demo is kept."""
    from benchmarks.project import Project
    from benchmarks.sidebyside import SideBySide

    with Project("spec-check", data=terse_data["train"].parent) as project:
        sbs = SideBySide(project, max_steps=7, val_check_interval=7)
        first, second = sbs.spec(0), sbs.spec(1)
        demo = project.demo
    assert demo["start_from"] and demo["start_from"] != [sbs.params]
    for index, spec in enumerate((first, second)):
        assert spec.start_from == [sbs.params]
        assert (spec.budget.trials, spec.budget.max_steps, spec.budget.max_retries) == (1, 7, 0)
        assert spec.training.seed == index
        assert sorted(spec.behaviours) == sorted(demo["behaviours"])
        assert spec.budget.warmup_fraction == demo["budget"]["warmup_fraction"]
    assert first.name != second.name and first.trials_dir != second.trials_dir


def test_memory_refuses_a_sweep_whose_sampled_trials_did_not_all_train():
    from benchmarks.memory import every_trial_trained
    from benchmarks.project import BenchmarkMismatch, demo_search_space, fixed_params

    params = fixed_params(demo_search_space())
    trained = [_frozen(0, params, trial_pid=10, steps=2), _frozen(1, {**params, "lr": 2e-3}, trial_pid=11, steps=2)]
    every_trial_trained(trained, [0, 1], trials_wanted=2, steps=2)
    with pytest.raises(BenchmarkMismatch, match="1 outcomes, not the 2"):
        every_trial_trained(trained, [0], trials_wanted=2, steps=2)
    repeat = [trained[0], _frozen(1, params, repeat_of=0)]
    with pytest.raises(BenchmarkMismatch, match="trial 1 was answered without training"):
        every_trial_trained(repeat, [0, 1], trials_wanted=2, steps=2)
    short = [trained[0], _frozen(1, params, trial_pid=11, steps=1)]
    with pytest.raises(BenchmarkMismatch, match="after 1 of 2 steps"):
        every_trial_trained(short, [0, 1], trials_wanted=2, steps=2)


def _curves():
    from benchmarks.replay import Curve

    return [  # trial 0 is the best; 1 is worse at every validation; 2 starts worse, then wins late
        Curve(0, {}, {100: 0.9, 200: 0.5, 300: 0.2}, 300, 0.2),
        Curve(1, {}, {100: 1.2, 200: 0.9, 300: 0.6}, 300, 0.6),
        Curve(2, {}, {100: 1.0, 200: 0.4, 300: 0.1}, 300, 0.1),
    ]


def _spec(tmp_path, pruner: dict):
    import yaml

    from harness.spec import load_spec

    raw = {
        "model": "canary-tiny",
        "data": {"train": "t.json", "validation": "v.json"},
        "search_space": "s.yaml",
        "budget": {"trials": 3, "max_steps": 300, "val_check_interval": 100},
        "pruner": pruner,
    }
    path = tmp_path / "replayed.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_spec(str(path))


def test_replay_prunes_as_the_harness_pruner_would_on_one_slot_and_not_before_a_trial_completes(tmp_path):
    """One slot: trial 1 meets trial 0's complete curve at step 100 and is pruned there; trial 2, worse at 100,
    is pruned too, which loses the late winner (the gap the benchmark reports). Two slots: trials 0 and 1 run
    together, so nothing is complete when trial 1 reports and it runs to the end; trial 2 then meets the median
    of both (1.05 at step 100) and is kept."""
    from benchmarks.replay import replay

    spec = _spec(tmp_path, {"type": "median", "n_startup_trials": 1})
    one = replay(spec, _curves(), slots=1)
    assert one.pruned_at == {1: 100, 2: 100}
    assert (one.steps, one.unpruned_steps, one.complete) == (500, 900, 1)
    assert one.best == 0.2 and one.unpruned_best == 0.1 and abs(one.gap - 1.0) < 1e-9
    two = replay(spec, _curves(), slots=2)
    assert two.pruned_at == {} and two.best == 0.1 and two.gap == 0
    none = replay(_spec(tmp_path, {"type": "none"}), _curves(), slots=1)
    assert none.pruned_at == {} and none.saved == 0 and none.gap == 0


def test_decision_replay_judges_each_choice_by_true_means_and_never_reuses_a_run(terse_data):
    """Two settings: a steady one (true mean 0.115) and one with a lucky seed (0.01) among bad ones (true mean
    0.3925). The single best run falls for the lucky seed whenever the search drew it; the best mean over two runs
    never does; and a run is drawn once, so the runs a choice never saw exclude what it drew."""
    from benchmarks.decision import POOL, Pool, replay
    from benchmarks.project import Project

    params = [dict(zip(("lr", "batch_duration", "freeze", "use_loss_mask_for_prompt"), s, strict=True)) for s in POOL]
    pool = Pool(params[:2], [[0.10, 0.11, 0.12, 0.13], [0.01, 0.50, 0.52, 0.54]], "hand-made")
    means = [0.115, 0.3925]
    fooled = 0
    with Project("decision-check", data=terse_data["train"].parent) as project:
        spec = project.spec("plan", budget={"confirm": {"top": 2, "seeds": 1}})
        for seed in range(12):
            choices = replay(pool, (2, 2, 1), seed, spec)
            for choice in choices.values():
                assert choice.regret == pytest.approx(means[choice.setting] - means[0])
            assert choices["confirmed, best mean (no cheaper-setting rule)"].setting == 0
            single = choices["single best run"]
            fooled += single.setting == 1
            if single.setting == 1:  # it drew the lucky run: the three it never saw average 0.52
                assert single.unseen_regret == pytest.approx(0.52 - means[0])
    assert 0 < fooled < 12


def test_benchmarks_train_without_the_forgetting_levers_unless_they_measure_them(terse_data, tmp_path, monkeypatch):
    """The demo may search `replay_fraction` and `merge_alpha` with `data.replay` and a retention limit; a
    benchmark's project keeps its trials to the new domain alone, or keeps the levers it names."""
    import yaml

    import benchmarks.project as project_module
    from benchmarks.project import Project, demo_search_space
    from harness.search_space import load_search_space, merge_alphas

    levers_shipped = ("replay_fraction", "merge_alpha")  # the demo's own space may already search them
    space = {k: v for k, v in yaml.safe_load(demo_search_space().read_text()).items() if k not in levers_shipped}
    levers = {"replay_fraction": {"type": "float", "low": 0.0, "high": 0.5}}
    levers["merge_alpha"] = {"type": "categorical", "choices": [0.5]}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space | levers))
    old = str(terse_data["validation"])  # any manifest: the spec is loaded, never run
    demo = yaml.safe_load(project_module.DEMO_SPEC.read_text())
    demo["search_space"] = str(tmp_path / "space.yaml")  # absolute: the repo's folder is not joined to it
    demo["data"] |= {"replay": [old], "retention": [old]}
    demo["objective"] = {**demo["objective"], "retention_max_wer_increase": 0.1}
    given = {k: v for k, v in demo["start_from"][0].items() if k not in levers_shipped}
    demo["start_from"] = [{**given, "replay_fraction": 0.25}, {"replay_fraction": 0.5}]
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(demo))
    monkeypatch.setattr(project_module, "DEMO_SPEC", tmp_path / "demo.yaml")

    with Project("plain", data=terse_data["train"].parent) as project:
        spec = project.spec("plain")
        assert (set(load_search_space(spec.search_space)), merge_alphas(spec.search_space)) == (set(space), ())
    assert (spec.data.replay, spec.data.retention, spec.objective.retention_max_wer_increase) == ([], [], None)
    assert spec.start_from == [given]  # an entry of levers alone is dropped
    with Project("levers", data=terse_data["train"].parent, levers=("replay_fraction", "merge_alpha")) as project:
        spec = project.spec("levers")
        assert "replay_fraction" in load_search_space(spec.search_space) and merge_alphas(spec.search_space)
    assert spec.data.replay == [old] and spec.start_from == demo["start_from"]
