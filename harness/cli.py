"""The `harness` command: parse, call one function, print. Logic lives in the modules it calls."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from harness.errors import HarnessError
from harness.stopping import EXIT_CODES, INTERRUPTED, Stopped

DEMO_DATA_DIR = Path("data/demo")


def _sweep(args: argparse.Namespace, console: Console) -> int:
    """`sweep` and `worker` are one loop; a worker names shared storage and tracking explicitly."""
    from harness.devices import default_slots
    from harness.spec import load_spec
    from harness.sweep import Supervisor

    spec = load_spec(args.sweep)
    if args.trials is not None:
        spec.budget.trials = args.trials
    spec.use_stores(storage=getattr(args, "storage", None), tracking_uri=getattr(args, "tracking_uri", None))
    Supervisor(spec, console=console, slots=default_slots(args.workers, devices=spec.training.devices)).run()
    if not _publish(spec, console, html=True):
        console.print(f"[red]error:[/] {_no_best(spec)}")
        return 1
    return 0


def _no_best(spec) -> str:
    """Why a finished sweep has no best trial: nothing completed, or every complete trial is infeasible."""
    from optuna.trial import TrialState

    from harness.study import no_best_reason, require_study

    study = require_study(spec)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return "the sweep ended with no complete trial; the failures are listed above."
    return f"the sweep ended with {no_best_reason(study)}; each trial's note above says by how much."


LAUNCH_OVERRIDES = ("executor", "workers", "gpus_per_worker", "time_minutes", "partition", "account")


def _launch(args: argparse.Namespace, console: Console) -> int:
    """Submit `launch.workers` worker jobs; the command line's options override the spec's `launch:`."""
    from harness.launch import launch
    from harness.spec import load_spec

    spec = load_spec(args.sweep)
    spec.use_stores(storage=args.storage, tracking_uri=args.tracking_uri)
    for key in LAUNCH_OVERRIDES:
        if getattr(args, key) is not None:
            setattr(spec.launch, key, getattr(args, key))
    return launch(spec, dry_run=args.dry_run, console=console)


def _report(args: argparse.Namespace, console: Console) -> int:
    from harness.sweep_lookup import find_sweep

    _publish(find_sweep(args.sweep), console, html=not args.no_html)
    return 0


def _status(args: argparse.Namespace, console: Console) -> int:
    """One view of the sweep from its stores; `--watch` redraws it until Ctrl-C (130) or SIGTERM (143)."""
    from harness.status import show_status
    from harness.stopping import reason_of, stop_requests
    from harness.sweep_lookup import find_sweep

    spec = find_sweep(args.sweep, storage=args.storage, tracking_uri=args.tracking_uri)
    try:
        with stop_requests():
            show_status(spec, console, watch=args.every if args.watch else None)
    except KeyboardInterrupt as stop:  # only --watch waits; nothing to record, the sweep runs on
        return EXIT_CODES[reason_of(stop)]
    return 0


def _publish(spec, console: Console, *, html: bool) -> bool:
    """Print the summary, then write the report page (Markdown, HTML, best.yaml) and log it to MLflow.
    True when the sweep has a complete trial."""
    from harness.outputs import check_dir
    from harness.report import print_report, report_dir, write_report

    check_dir(report_dir(spec), f"the report to {report_dir(spec)}", fix="move the file away")  # not mkdir's error
    summary = print_report(spec, console)
    files = write_report(spec, html_report=html)
    for warning in files.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    written = [p for p in (files.markdown, files.html, files.best_config) if p is not None]
    console.print("Report: " + ", ".join(str(p) for p in written), highlight=False)
    if files.logged_to:
        console.print(f"Logged on MLflow run {files.logged_to} under `report/`.", highlight=False)
    return summary.best is not None


def _export(args: argparse.Namespace, console: Console) -> int:
    """Copy the chosen trial's `.nemo` (`--out`), register it in the MLflow Model Registry (`--register`), or both."""
    from harness.errors import UsageError
    from harness.export import export_model
    from harness.sweep_lookup import find_sweep
    from harness.tracking import run_name

    if args.out is None and args.register is None:
        raise UsageError("`harness export` needs `--out PATH` (a .nemo file or a folder), `--register NAME`, or both.")
    spec = find_sweep(args.sweep)
    if args.out is not None:
        trial, path = export_model(spec, args.trial, args.out)
        console.print(f"Exported {run_name(trial.number)} to {path}", highlight=False)
    if args.register is not None:
        from harness.registry import register_model, registration_text

        console.print(escape(registration_text(register_model(spec, args.trial, args.register))), highlight=False)
    return 0


def _reproduce(args: argparse.Namespace, console: Console) -> int:
    from harness.sweep import reproduce_trial
    from harness.sweep_lookup import find_sweep

    reproduce_trial(find_sweep(args.sweep), args.trial, console)
    return 0


def _transcribe(args: argparse.Namespace, console: Console) -> int:
    """Decode audio with a fine-tuned checkpoint, its custom behaviours switched per `--behaviour`."""
    from harness.transcription import transcribe_files

    texts = transcribe_files(
        args.model,
        args.audio,
        source_lang=args.source_lang,
        target_lang=args.target_lang,
        behaviours=args.behaviour,
        pnc=args.pnc,
    )
    for path, text in zip(args.audio, texts, strict=True):
        print(f"{path}\t{text}")  # plain tab-separated lines, for pipes
    return 0


def _demo_data(args: argparse.Namespace, console: Console) -> int:
    from harness.outputs import make_dir
    from harness.speech import build_demo_data

    manifests = build_demo_data(make_dir(args.out, f"`--out {args.out}`"))
    for split, path in manifests.items():
        console.print(f"{split}: {path}")
    return 0


def _whole_number(minimum: int, what: str):
    """An argparse type: a whole number >= `minimum`. `--workers 0` would otherwise silently mean
    the default, and `--workers -1` run nothing and exit 0."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, not {value}")
        return value

    return parse


_count = _whole_number(1, "a whole number of at least 1")  # --workers, --trials
_trial_number = _whole_number(0, "a trial number (0, 1, ...)")  # Optuna numbers trials from 0


def _add_launch(sub) -> None:
    launch = sub.add_parser("launch", help="submit worker jobs on one shared study (local or Slurm, via submitit)")
    launch.add_argument("sweep")
    launch.add_argument("--executor", choices=("local", "slurm"), help="override launch.executor")
    launch.add_argument("--workers", type=_count, help="override launch.workers (worker jobs)")
    gpus = _whole_number(0, "a whole number of at least 0")
    launch.add_argument("--gpus-per-worker", type=gpus, help="override launch.gpus_per_worker (0: CPU workers)")
    launch.add_argument("--time-minutes", type=_count, help="override launch.time_minutes (per job)")
    launch.add_argument("--partition", help="override launch.partition (Slurm)")
    launch.add_argument("--account", help="override launch.account (Slurm)")
    launch.add_argument("--storage", help="Optuna storage URL the workers share ($HARNESS_STORAGE)")
    launch.add_argument("--tracking-uri", help="MLflow tracking server the workers share ($HARNESS_TRACKING_URI)")
    launch.add_argument("--dry-run", action="store_true", help="print the job script (Slurm) or plan; submit nothing")
    launch.set_defaults(func=_launch)


SWEEP_HELP = "sweep name (sweeps/<name>.yaml, or the YAML its study ran from) or a YAML path"


def _seconds(text: str) -> float:
    """An argparse type: a positive number of seconds (`--every 0` would poll the store in a busy loop)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text}")
    return value


def _add_status(sub) -> None:
    status = sub.add_parser("status", help="one view of a sweep running anywhere: trials, best, budget, ETA, jobs")
    status.add_argument("sweep", help=SWEEP_HELP)
    status.add_argument("--storage", help="the Optuna storage the sweep runs on ($HARNESS_STORAGE)")
    status.add_argument("--tracking-uri", help="its MLflow tracking store ($HARNESS_TRACKING_URI)")
    status.add_argument("--watch", action="store_true", help="refresh the view until Ctrl-C (every --every seconds)")
    status.add_argument("--every", type=_seconds, default=5.0, metavar="SECONDS", help="refresh period (default 5)")
    status.set_defaults(func=_status)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description="Optuna sweeps that fine-tune NeMo Canary models.")
    sub = parser.add_subparsers(dest="command", required=True)
    sweep = sub.add_parser("sweep", help="run (or resume) a sweep: sweeps/<name>.yaml")
    sweep.add_argument("sweep", help="sweep name (sweeps/<name>.yaml) or a YAML path")
    sweep.add_argument("--trials", type=_count, help="override budget.trials (total across runs and workers)")
    sweep.add_argument("--workers", type=_count, help="trials at once on this machine (default: one per visible GPU)")
    sweep.set_defaults(func=_sweep)
    worker = sub.add_parser("worker", help="join a sweep from any machine through shared storage and tracking")
    worker.add_argument("sweep")
    worker.add_argument("--storage", help="Optuna storage URL, e.g. postgresql://user@db/optuna ($HARNESS_STORAGE)")
    worker.add_argument(
        "--tracking-uri", help="MLflow tracking server, e.g. http://mlflow:5000 ($HARNESS_TRACKING_URI)"
    )
    worker.add_argument("--trials", type=_count, help="override budget.trials")
    worker.add_argument("--workers", type=_count, help="trials at once on this machine (default: one per visible GPU)")
    worker.set_defaults(func=_sweep)
    _add_launch(sub)
    _add_status(sub)
    report = sub.add_parser("report", help="best trial, evidence and provenance: mlruns/reports/<sweep>/")
    report.add_argument("sweep", help=SWEEP_HELP)
    report.add_argument("--no-html", action="store_true", help="write report.md only, no report.html")
    report.set_defaults(func=_report)
    export = sub.add_parser(
        "export", help="copy the best (or a chosen) trial's fine-tuned model.nemo, or register it in MLflow"
    )
    export.add_argument("sweep", help=SWEEP_HELP)
    export.add_argument("--trial", type=_trial_number, help="trial number (default: the best trial)")
    export.add_argument("--out", type=Path, help="target .nemo file, or a directory")
    export.add_argument(
        "--register",
        metavar="NAME",
        help="register it as a new version of MLflow model NAME in the sweep's tracking store (alias champion)",
    )
    export.set_defaults(func=_export)
    reproduce = sub.add_parser("reproduce", help="re-run a trial from its recorded params and seed")
    reproduce.add_argument("sweep", help=SWEEP_HELP)
    reproduce.add_argument("--trial", type=_trial_number, help="trial number (default: the best trial)")
    reproduce.set_defaults(func=_reproduce)
    decode = sub.add_parser("transcribe", help="decode audio with a (fine-tuned) .nemo and its custom behaviours")
    decode.add_argument("model", help="a .nemo file (e.g. from `harness export`) or a packaged twin's name")
    decode.add_argument("audio", nargs="+", type=Path, help="audio files")
    decode.add_argument("--source-lang", default="en", help="spoken language (default: en)")
    decode.add_argument("--target-lang", help="output language (default: the source language, i.e. ASR)")
    decode.add_argument("--pnc", default="yes", help="punctuation and capitals: yes (NeMo's default) or no")
    decode.add_argument(
        "--behaviour", action="append", default=[], metavar="NAME=on|off", help="switch a custom behaviour (repeat)"
    )
    decode.set_defaults(func=_transcribe)
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
        console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)  # `[launch]` is text, not markup
        return 2
    except Stopped as stop:  # Ctrl-C or SIGTERM inside a sweep: what was recorded, and how to resume
        console.print(f"[yellow]{stop}[/]", highlight=False)
        return stop.exit_code
    except KeyboardInterrupt:
        console.print("[yellow]Interrupted; no trial or run was in flight, so nothing needed recording.[/]")
        return EXIT_CODES[INTERRUPTED]
    except Exception as exc:  # a full disk where no store handler met it (report files, manifests): one line
        from harness.disk_space import disk_full
        from harness.stores import full_disk_text

        if not disk_full(exc):
            raise
        console.print(f"[red]error:[/] {escape(full_disk_text(exc))}", highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
