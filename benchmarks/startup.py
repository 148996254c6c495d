"""Trial start-up: seconds from "trial asked" to the first training step, harness vs bare, phase by phase.

Every trial pays its start-up again (a process per trial frees GPU memory and isolates crashes), so the
harness's share of it must stay small: under 5 s per trial beyond what the bare NeMo flow needs. Both sides
are timestamped by the same probe (benchmarks/probe.py); the harness trial runs unmodified.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from benchmarks.cli import Verdict, conclude, header, median, parse_args, table
from benchmarks.project import Project, fixed_params
from benchmarks.sidebyside import side_by_side

FULL = {"steps": 10, "val_check_interval": 10, "repetitions": 3}
SMOKE = {"steps": 3, "val_check_interval": 3, "repetitions": 2}  # 2 pairs: each must train once
TARGET_SECONDS = 5.0
# (phase, from stamp, to stamp): contiguous, so the phases add up to the total.
PHASES = [
    ("supervisor: asked -> trial process forked (ask, MLflow run, config surgery, job files)", "started", "spawned"),
    ("interpreter start", "spawned", "python"),
    ("imports: torch + Lightning", "python", "lightning_done"),
    ("before the Trainer: MLflow/Optuna imports, spec, MLflow client, Optuna study", "lightning_done", "trainer_start"),
    ("Trainer", "trainer_start", "trainer_done"),
    ("NeMo import", "trainer_done", "restore_start"),
    ("restore_from (archive, weights, tokenizers, override config)", "restore_start", "restore_done"),
    ("dataloaders (setup_training_data, setup_validation_data)", "restore_done", "val_data_done"),
    ("fit() -> first batch (Lightning setup, freezing, first batch loaded)", "val_data_done", "first_batch"),
]


def config_surgery_ms(args, repeats: int = 20) -> float:
    """Median milliseconds of `trial_config` + saving it, the supervisor's config surgery per trial."""
    from omegaconf import OmegaConf

    from harness.canary import inspect_checkpoint, trial_config
    from harness.model_source import resolve_model

    with Project("startup-surgery", data=args.data) as project:
        spec = project.spec("surgery")
        base = inspect_checkpoint(resolve_model(spec.model)).config
        params = fixed_params(project.search_space)
        times = []
        for seed in range(repeats):
            started = time.perf_counter()
            cfg = trial_config(
                base,
                params,
                data=spec.data,
                training=spec.training,
                budget=spec.budget,
                seed=seed,
                behaviours=spec.behaviours,  # the demo's behaviour tokens, as the supervisor applies them
            )
            OmegaConf.save(cfg, project.root / "config.yaml")
            times.append(time.perf_counter() - started)
    return 1000 * median(times)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv, full=FULL, smoke=SMOKE)
    header("startup: trial asked -> first training step", args)
    pairs = side_by_side("startup", args)
    rows = []
    for phase, start, end in PHASES:
        h = median(run.at(end) - run.at(start) for run, _ in pairs)
        b = median(run.at(end) - run.at(start) for _, run in pairs)
        rows.append((phase, h, b, h - b))
    total_h, total_b = median(h.at("first_batch") for h, _ in pairs), median(b.at("first_batch") for _, b in pairs)
    rows.append(("total: asked/launched -> first training batch", total_h, total_b, total_h - total_b))
    table(rows, ["phase (medians)", "harness s", "bare s", "harness-added s"])
    print(f"of which config surgery (trial_config + save, in the supervisor): {config_surgery_ms(args):.1f} ms")
    print(
        "per pair, harness vs bare to the first batch: "
        + ", ".join(f"{h.at('first_batch'):.1f} vs {b.at('first_batch'):.1f} s" for h, b in pairs)
    )
    added = median(h.at("first_batch") - b.at("first_batch") for h, b in pairs)
    return conclude(
        Verdict(
            "startup: harness-added seconds to the first training step (median of pairs)",
            added,
            f"< {TARGET_SECONDS:.0f} s",
            added < TARGET_SECONDS,
            " s",
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
