"""Smoke runs of every benchmark (`--smoke`: a few steps, one repetition, one or two trials).

They check that each benchmark runs end to end and prints its figures with the ratio last, never speed:
the real figures come from the full runs recorded in benchmarks/RESULTS.md.
"""

import importlib
import re

import pytest

# The four that train several trials take about 3 minutes together: `make test-extended` runs them
# (marker `extended`), keeping `make test` under its 15 minutes; the other two run in every `make test`.
TRAINING = ["overhead", "throughput", "pruning", "memory"]
BENCHMARKS = [pytest.param(name, marks=pytest.mark.extended) for name in TRAINING] + ["startup", "batch_fill"]
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
