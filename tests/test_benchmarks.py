"""Smoke runs of every benchmark (`--smoke`: a few steps, one repetition, one or two trials).

They check that each benchmark runs end to end and prints its figures with the ratio last, never speed:
the real figures come from the full runs recorded in benchmarks/RESULTS.md.
"""

import importlib
import re

import pytest

# The ones that train (or time) trials take minutes together: `make test-extended` runs them (marker
# `extended`), keeping `make test` under its 15 minutes; batch_fill runs in every `make test`.
TRAINING = ["overhead", "throughput", "pruning", "memory", "samplers", "startup"]
BENCHMARKS = [pytest.param(name, marks=pytest.mark.extended) for name in TRAINING] + ["batch_fill"]
RESULT = re.compile(r"^RESULT .+ = -?\d+\.\d+.* \(target .+\): (met|NOT met)$")


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_smoke_prints_figures_and_ratio_last(name, terse_data, capsys):
    """On data shaped like the demo's (the demo spec declares the `terse` behaviour)."""
    module = importlib.import_module(f"benchmarks.{name}")
    assert module.main(["--smoke", "--data", str(terse_data["train"].parent)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert RESULT.match(lines[-1]), lines[-1]
    assert any(re.search(r"\d+\.\d+", line) for line in lines[:-1])
    assert any(line.startswith("load at end ") for line in lines)


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
