"""The `harness` command: parse, call one function, print. Logic lives in the modules it calls."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from harness.errors import HarnessError

DEMO_DATA_DIR = Path("data/demo")


def _sweep(args: argparse.Namespace, console: Console) -> int:
    """`sweep` and `worker` are one loop; a worker names shared storage and tracking explicitly."""
    from harness.report import print_report
    from harness.spec import load_spec
    from harness.sweep import Supervisor, default_slots

    spec = load_spec(args.sweep)
    if args.trials is not None:
        spec.budget.trials = args.trials
    spec.storage = getattr(args, "storage", None) or spec.storage
    spec.tracking.uri = getattr(args, "tracking_uri", None) or spec.tracking.uri
    Supervisor(spec, console=console, slots=default_slots(args.workers)).run()
    print_report(spec, console)
    return 0


def _report(args: argparse.Namespace, console: Console) -> int:
    from harness.report import print_report
    from harness.spec import load_spec

    print_report(load_spec(args.sweep), console)
    return 0


def _demo_data(args: argparse.Namespace, console: Console) -> int:
    from harness.speech import build_demo_data

    manifests = build_demo_data(args.out)
    for split, path in manifests.items():
        console.print(f"{split}: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description="Optuna sweeps that fine-tune NeMo Canary models.")
    sub = parser.add_subparsers(dest="command", required=True)
    sweep = sub.add_parser("sweep", help="run (or resume) a sweep: sweeps/<name>.yaml")
    sweep.add_argument("sweep", help="sweep name (sweeps/<name>.yaml) or a YAML path")
    sweep.add_argument("--trials", type=int, help="override budget.trials (total across runs and workers)")
    sweep.add_argument("--workers", type=int, help="trials at once on this machine (default: one per visible GPU)")
    sweep.set_defaults(func=_sweep)
    worker = sub.add_parser("worker", help="join a sweep from any machine through shared storage and tracking")
    worker.add_argument("sweep")
    worker.add_argument("--storage", help="Optuna storage URL, e.g. postgresql://user@db/optuna ($HARNESS_STORAGE)")
    worker.add_argument("--tracking-uri", help="MLflow tracking server, e.g. http://mlflow:5000 ($HARNESS_TRACKING_URI)")
    worker.add_argument("--trials", type=int, help="override budget.trials")
    worker.add_argument("--workers", type=int, help="trials at once on this machine (default: one per visible GPU)")
    worker.set_defaults(func=_sweep)
    report = sub.add_parser("report", help="best trial and all trials of a sweep")
    report.add_argument("sweep")
    report.set_defaults(func=_report)
    data = sub.add_parser("demo-data", help="synthesise the demo fine-tuning data (cached)")
    data.add_argument("--out", type=Path, default=DEMO_DATA_DIR)
    data.set_defaults(func=_demo_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=160)  # logs keep whole table rows
    try:
        return args.func(args, console)
    except HarnessError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]Interrupted; the running trial was stopped and recorded.[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
