"""`python -m tools.twins`: parse, build (or only verify) one twin."""

from __future__ import annotations

import argparse
from pathlib import Path

from tools.twins.config import TWINS
from tools.twins.paths import ASSETS_DIR, DEFAULT_WORK_DIR
from tools.twins.pretraining import build_twin, check_restored

DESCRIPTION = "The recipe that builds and pretrains the small Canary twins shipped with the harness."


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.twins", description=DESCRIPTION)
    parser.add_argument("--name", default="canary-tiny", choices=sorted(TWINS))
    parser.add_argument("--out", type=Path, help="where to write the .nemo (default harness/assets/<name>.nemo)")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="corpora and tokenizers")
    parser.add_argument("--steps", type=int, default=2500, help="pretraining steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verify", type=Path, help="only restore this .nemo and check it")
    parser.add_argument("--skip-eval", action="store_true", help="skip the held-out evaluation (structural twins)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.verify is not None:
        check_restored(args.verify)
        return 0
    out = args.out or ASSETS_DIR / f"{args.name}.nemo"
    build_twin(
        args.name, out=out, work_dir=args.work_dir, steps=args.steps, seed=args.seed, evaluate_model=not args.skip_eval
    )
    return 0
