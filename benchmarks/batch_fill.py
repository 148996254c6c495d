"""Batch fill: how much of each training batch is speech, with today's batching vs the trial's 1-D buckets.

No audio and no training: NeMo's own `get_lhotse_sampler_from_config` builds the sampler from the very
`train_ds` that `harness.canary.trial_config` writes for a trial (on canary-tiny's released config), over a
NeMo manifest of synthetic durations shaped like real speech (lognormal, median 7 s, clipped to 1-40 s; a
`sampling_rate` field spares reading audio). "today" is the same config with the surgery before 1-D buckets:
bucketing off and the released `quadratic_duration` (15, read from the packaged twin). Each sampler is
iterated like a trial (epoch after epoch) for `--steps` batches. Fill is real seconds / padded seconds (cuts
x longest cut, what `batch.audio` holds); audio per step is the mean real seconds per batch. Two data sizes:
`--cuts` (about 47 h) and `--small-cuts` (about 1 h, where epochs end every few batches). The demo data under
`--data`, if present, is measured too at the demo's batch durations (information, no target).
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.cli import Verdict, conclude, header, parse_args, table

FULL = {"cuts": 20000, "small_cuts": 430, "steps": 400, "seeds": 3}
SMOKE = {"cuts": 300, "small_cuts": 100, "steps": 20, "seeds": 1}
BATCH_DURATIONS = (120, 240, 480)  # search_spaces/canary-finetune.yaml
DEMO_BATCH_DURATIONS = (10, 20, 30)  # search_spaces/canary-tiny-demo.yaml
FILL_TARGET = 0.80
AUDIO_RATIO_TARGET = 1.7


def speech_durations(count: int, seed: int) -> list[float]:
    """Utterance lengths like read and conversational speech corpora: lognormal around 7 s, 1-40 s."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [round(float(d), 3) for d in np.clip(rng.lognormal(np.log(7.0), 0.6, count), 1.0, 40.0)]


def write_manifest(path: Path, durations: Sequence[float]) -> Path:
    """A NeMo manifest whose audio never needs to exist (the sampler reads durations only)."""
    lines = (
        json.dumps(
            {
                "audio_filepath": f"/nowhere/{i}.wav",
                "duration": d,
                "sampling_rate": 16000,
                "text": "x",
                "source_lang": "en",
                "target_lang": "en",
            }
        )
        for i, d in enumerate(durations)
    )
    path.write_text("\n".join(lines) + "\n")
    return path


def configs(manifest: Path, seconds: float, seed: int, steps: int) -> dict[str, Any]:
    """The trial's `train_ds` from the real surgery, and the two alternatives it is compared with."""
    from omegaconf import open_dict

    from harness.canary import read_config, trial_config
    from harness.model_source import packaged_model
    from harness.spec import BudgetSpec, DataSpec, TrainingSpec

    base = read_config(packaged_model("canary-tiny"))
    released_q = base.train_ds.quadratic_duration
    cfg = trial_config(
        base,
        {"batch_duration": seconds},
        data=DataSpec(train=str(manifest), validation=str(manifest)),
        training=TrainingSpec(),
        budget=BudgetSpec(max_steps=steps, val_check_interval=steps),
        seed=seed,
    )
    new = cfg.train_ds
    today, bucketed_q = new.copy(), new.copy()
    with open_dict(today), open_dict(bucketed_q):
        today.update(use_bucketing=False, quadratic_duration=released_q)
        bucketed_q.update(quadratic_duration=released_q)
    return {"today": today, "new": new, "buckets+q": bucketed_q, "released_q": released_q}


def measure(train_ds, steps: int) -> dict[str, float]:
    """Iterate NeMo's sampler for `steps` batches, epoch after epoch as Lightning does."""
    from nemo.collections.common.data.lhotse.dataloader import (
        get_lhotse_sampler_from_config,
        make_structured_with_schema_warnings,
    )

    sampler, _ = get_lhotse_sampler_from_config(
        make_structured_with_schema_warnings(train_ds), global_rank=0, world_size=1
    )
    real: list[float] = []
    padded: list[float] = []
    epoch = 0
    while len(real) < steps:
        sampler.set_epoch(epoch)
        epoch += 1
        before = len(real)
        for batch in sampler:
            durations = [cut.duration for cut in batch]
            real.append(sum(durations))
            padded.append(len(durations) * max(durations))
            if len(real) >= steps:
                break
        if len(real) == before:
            raise RuntimeError("the sampler yielded no batch in a whole epoch")
    return {
        "fill": sum(real) / sum(padded),
        "audio": sum(real) / len(real),
        "epochs": epoch,
        "padded_max": max(padded) / float(train_ds.batch_duration),
    }


def quiet_nemo() -> None:
    import logging
    import warnings

    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lhotse")


def compare(manifest: Path, label: str, seed: int, seconds: float, steps: int) -> tuple:
    cfgs = configs(manifest, seconds, seed, steps)
    today, new, alt = (measure(cfgs[k], steps) for k in ("today", "new", "buckets+q"))
    return (
        label,
        seed,
        int(seconds),
        today["fill"],
        today["audio"],
        new["fill"],
        new["audio"],
        new["audio"] / today["audio"],
        new["padded_max"],
        alt["fill"],
        alt["audio"] / today["audio"],
        new["epochs"],
    )


def demo_rows(data: Path, work: Path, steps: int) -> list[tuple]:
    """The demo corpus's own durations (espeak commands, 1-4 s) at the demo's batch durations."""
    source = data / "train.json"
    if not source.is_file():
        print(f"  (no {source}: demo rows skipped)")
        return []
    durations = [json.loads(line)["duration"] for line in source.read_text().splitlines() if line.strip()]
    manifest = write_manifest(work / "demo.json", durations)
    return [compare(manifest, f"demo ({len(durations)} cuts)", 0, seconds, steps) for seconds in DEMO_BATCH_DURATIONS]


HEADINGS = [
    "data",
    "seed",
    "batch_duration",
    "today fill",
    "today audio-s/step",
    "new fill",
    "new audio-s/step",
    "audio ratio",
    "new max padded/bd",
    "buckets+Q fill",
    "buckets+Q ratio",
    "epochs",
]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv, full=FULL, smoke=SMOKE)
    header("batch_fill: today's batching vs 1-D buckets, same batch_duration", args)
    quiet_nemo()
    work = Path(tempfile.mkdtemp(prefix="bench-batch-fill-", dir="/tmp"))
    rows = []
    try:
        for label, count in (("large", args.cuts), ("small", args.small_cuts)):
            for seed in range(args.seeds):
                durations = speech_durations(count, seed)
                hours = sum(durations) / 3600
                manifest = write_manifest(work / f"{label}-{seed}.json", durations)
                print(
                    f"  {label}, seed {seed}: {count} cuts, {hours:.1f} h, median {statistics.median(durations):.1f} s",
                    flush=True,
                )
                rows += [compare(manifest, f"{label} ({hours:.1f} h)", seed, b, args.steps) for b in BATCH_DURATIONS]
        demo = demo_rows(args.data, work, args.steps)
        released_q = configs(work / "large-0.json", BATCH_DURATIONS[0], 0, args.steps)["released_q"]
    finally:
        if args.keep:
            print(f"(kept {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"today: no bucketing, quadratic_duration {released_q} (released); new: harness.canary.trial_config; "
        f"buckets+Q: new with quadratic_duration {released_q}"
    )
    table(rows + demo, HEADINGS)
    for b in BATCH_DURATIONS:
        mine = [r for r in rows if r[2] == b]
        print(
            f"batch_duration {b}: fill today {min(r[3] for r in mine):.2f}-{max(r[3] for r in mine):.2f}, "
            f"new {min(r[5] for r in mine):.2f}-{max(r[5] for r in mine):.2f}; audio per step "
            f"{min(r[7] for r in mine):.2f}-{max(r[7] for r in mine):.2f}x today's"
        )
    fill, ratio = min(r[5] for r in rows), min(r[7] for r in rows)
    return conclude(
        Verdict(
            "batch_fill: lowest fill of a trial's batches (all seeds, sizes, batch durations)",
            fill,
            f">= {FILL_TARGET:.2f}",
            fill >= FILL_TARGET,
        ),
        Verdict(
            "batch_fill: lowest trained audio per step vs today at the same batch_duration",
            ratio,
            f">= {AUDIO_RATIO_TARGET:.1f}x",
            ratio >= AUDIO_RATIO_TARGET,
            "x",
        ),
    )


if __name__ == "__main__":
    raise SystemExit(main())
