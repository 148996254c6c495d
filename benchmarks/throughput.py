"""Throughput: training audio-seconds per wall-second of a harness trial vs the bare NeMo flow.

A regression in data loading (or anything else on the training path: callbacks, freezing, logging) shows
here as a ratio below 1, independently of start-up costs: the training loop is timed from the first batch
to the end of training, validations excluded. Audio seconds are counted by the same probe on both sides.
"""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks.cli import Verdict, conclude, header, median, parse_args, table
from benchmarks.sidebyside import side_by_side

FULL = {"steps": 100, "val_check_interval": 100, "repetitions": 2}
SMOKE = {"steps": 3, "val_check_interval": 3, "repetitions": 2}  # 2 pairs: each must train once
TARGET = 0.95  # the harness's training loop within 5% of the bare one


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv, full=FULL, smoke=SMOKE)
    header("throughput: training audio-seconds per wall-second", args)
    pairs = side_by_side("throughput", args)
    rows = []
    for i, (h, b) in enumerate(pairs):
        for run in (h, b):
            rows.append(
                (
                    i + 1,
                    run.kind,
                    run.steps,
                    run.audio_seconds,
                    run.loop_seconds,
                    run.audio_seconds / run.loop_seconds,
                    run.total,
                    run.audio_seconds / run.total,
                )
            )
    table(rows, ["pair", "side", "steps", "audio s", "loop s", "audio s/s (loop)", "total s", "audio s/s (total)"])
    for h, _ in pairs:  # the harness's own bookkeeping agrees with the probe?
        own = h.result.get("batches", {}).get("train_audio_seconds", float("nan"))
        print(
            f"harness self-reported (result.json): {own:.1f} audio s over {h.result['wall_seconds']:.1f} s of "
            f"trial.run() = {own / h.result['wall_seconds']:.2f} audio s/s; probe counted {h.audio_seconds:.1f}"
        )
    end_to_end = median((h.audio_seconds / h.total) / (b.audio_seconds / b.total) for h, b in pairs)
    print(f"end-to-end (start-up and final evaluation included) harness/bare: {end_to_end:.3f}")
    ratio = median((h.audio_seconds / h.loop_seconds) / (b.audio_seconds / b.loop_seconds) for h, b in pairs)
    return conclude(
        Verdict(
            "throughput: harness/bare training-loop audio-s per s (median of pairs)",
            ratio,
            f">= {TARGET}",
            ratio >= TARGET,
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
