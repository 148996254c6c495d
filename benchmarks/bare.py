"""The bare NeMo flow the harness trial is measured against; runs in its own child process.

Started by `benchmarks.sidebyside` as `python -c "from benchmarks.bare import bare_main; ..."` with the
probe's sitecustomize active. Deliberately independent of the harness (no harness import), so a harness
regression cannot hide in its own baseline; only the standard library is imported at module level, so the
bare side imports nothing before the probe's stamps that the harness trial does not.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

ARGUMENTS = (
    ("config", str),
    ("nemo", str),
    ("max_steps", int),
    ("val_check_interval", int),
    ("seed", int),
    ("accelerator", str),
    ("precision", str),
)


def bare_command(config, nemo, max_steps, val_check_interval, seed, accelerator, precision) -> list[str]:
    """The child process's command line (`ARGUMENTS`, in order, after the `-c` program)."""
    values = (config, nemo, max_steps, val_check_interval, seed, accelerator, precision)
    program = "from benchmarks.bare import bare_main; raise SystemExit(bare_main())"
    return [sys.executable, "-c", program, *(str(v) for v in values)]


def bare_main(argv: Sequence[str] | None = None) -> int:
    """NeMo's `speech_to_text_aed.py` fine-tune reduced to its steps: Trainer, restore, data, fit.

    Trainer settings equal the harness's: same steps, validation interval, precision, no logger, no
    checkpoints.
    """
    parser = argparse.ArgumentParser()
    for name, kind in ARGUMENTS:
        parser.add_argument(name, type=kind)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from lightning.pytorch import Trainer, seed_everything
    from omegaconf import OmegaConf

    seed_everything(args.seed, workers=True)
    cfg = OmegaConf.load(args.config)
    trainer = Trainer(
        accelerator=args.accelerator,
        devices=1,
        precision=args.precision,
        max_steps=args.max_steps,
        val_check_interval=args.val_check_interval,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        log_every_n_steps=args.max_steps + 1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    from nemo.collections.asr.models import EncDecMultiTaskModel

    model = EncDecMultiTaskModel.restore_from(args.nemo, override_config_path=cfg, trainer=trainer, map_location="cpu")
    model.setup_training_data(model.cfg.train_ds)
    model.setup_validation_data(model.cfg.validation_ds)
    trainer.fit(model)
    return 0
