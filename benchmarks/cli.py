"""Every benchmark's command line and output: options with full/smoke sizes, the header, plain tables, and
the closing `RESULT <name> = <value> (target <target>): met|NOT met` lines (tests/test_benchmarks.py checks
their format)."""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.project import DEMO_DATA


def parse_args(
    description: str,
    argv: Sequence[str] | None,
    *,
    full: dict[str, int],
    smoke: dict[str, int],
    switches: dict[str, str] | None = None,
    lists: dict[str, Sequence[str]] | None = None,
    paths: dict[str, str] | None = None,
) -> argparse.Namespace:
    """`--smoke` (tiny, for the test suite), `--data`, `--keep`, each size knob with its full/smoke default, the
    benchmark's own on/off `switches` ({name: help}), `lists` of choices ({name: all choices, the default}) and
    file `paths` ({name: help}, default none)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="a tiny run that checks the benchmark works (not speed)")
    parser.add_argument("--data", type=Path, default=DEMO_DATA, help="dir with train.json and validation.json")
    parser.add_argument("--keep", action="store_true", help="keep the temporary project dir under /tmp")
    parser.add_argument(
        "--validation-lines",
        type=int,
        default=None,
        help="validate on the first N lines of validation.json only (default: all; smoke: 8)",
    )
    for key, text in (switches or {}).items():
        parser.add_argument("--" + key.replace("_", "-"), action="store_true", help=text)
    for key, choices in (lists or {}).items():
        parser.add_argument("--" + key, nargs="+", choices=choices, default=list(choices), help="default: all")
    for key, text in (paths or {}).items():
        parser.add_argument("--" + key.replace("_", "-"), type=Path, default=None, help=text)
    for key, value in full.items():
        parser.add_argument(
            "--" + key.replace("_", "-"), type=type(value), default=None, help=f"default {value} (smoke: {smoke[key]})"
        )
    args = parser.parse_args(argv)
    for key in full:
        if getattr(args, key) is None:
            setattr(args, key, (smoke if args.smoke else full)[key])
    return args


def load() -> str:
    """The 1/5/15-minute load average: every figure is read against it (2 cores, shared machine)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def header(title: str, args: argparse.Namespace) -> None:
    sizes = " ".join(f"{k}={v}" for k, v in vars(args).items() if k not in ("data", "keep"))
    print(f"== {title} ({sizes})")
    print(f"machine: {os.cpu_count()} CPU cores, load at start {load()}", flush=True)


def table(rows: Sequence[Sequence[Any]], headings: Sequence[str]) -> None:
    """A plain fixed-width table (no rich: output goes to logs and RESULTS.md)."""
    cells = [[str(c) for c in headings]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headings))]
    for n, row in enumerate(cells):
        padded = (c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        print("  " + "  ".join(padded))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def _cell(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def median(values: Iterator[float] | Sequence[float]) -> float:
    return statistics.median(list(values))


@dataclass
class Verdict:
    """One figure against its target."""

    name: str
    value: float
    target: str
    met: bool
    unit: str = ""


def conclude(*verdicts: Verdict) -> int:
    """The last lines: load at the end, then each ratio and whether its target is met."""
    print(f"load at end {load()}")
    for v in verdicts:
        print(
            f"RESULT {v.name} = {v.value:.3f}{v.unit} (target {v.target}): {'met' if v.met else 'NOT met'}", flush=True
        )
    return 0
