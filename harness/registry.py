"""The chosen model in the MLflow Model Registry: `harness export SWEEP --register NAME`, and a sweep's end when its
spec has `registry: {name: NAME}` (`register_best`).

The chosen trial (`export.choose_trial`: the best, the seed-confirmed decision, or `--trial N`) and its kept
`.nemo` become a new version of registered model NAME in the sweep's tracking store (with SQLite, the registry
lives in the same database). The version is an MLflow pyfunc that transcribes (`harness.pyfunc`), logged with the
`.nemo` as its artifact on a new child run of the sweep's parent run (role `registration`). Its tags and
description link the sweep (name, study uid, parent run, trial number and run), the setting (params), the
figures (objective, validation, test) and the report.

The alias `champion` is the version to use (`models:/NAME@champion`); `harness.champion` decides when a new
version takes it, and the version says why in one line (tag `harness.champion_decision`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial
from rich.markup import escape

import harness
from harness.behaviours import declared_behaviours
from harness.canary import inspect_checkpoint
from harness.champion import (
    CHAMPION,
    PREDICTIONS_FOLDER,
    PREDICTIONS_TAG,
    Figure,
    champion_decision,
    champion_version,
    decision_figure,
    figure_interval,
    figure_predictions,
    held_predictions,
)
from harness.definition import study_uid
from harness.errors import HarnessError, StoreError, UsageError
from harness.export import choose_trial, kept_model
from harness.model_card import description
from harness.names import PARENT_ATTR, TEST_ATTR, run_name
from harness.report import report_dir
from harness.spec import SweepSpec, registry_name_problem
from harness.stores import MLFLOW_STORE, TRACKING_SETTING, open_mlflow, reported
from harness.study import require_study
from harness.tracking import Tracker
from harness.trial_record import TrialRecord, model_params

REGISTRATION_ROLE = "registration"
MODEL_NAME = "model"  # the pyfunc's name on the registration run
# Version tags: what the version is, and the figure the champion rule compares.
SWEEP_TAG, STUDY_TAG, STUDY_UID_TAG = "harness.sweep", "harness.study", "harness.study_uid"
PARENT_TAG, TRIAL_TAG, TRIAL_RUN_TAG = "harness.parent_run_id", "harness.trial", "harness.trial_run_id"
REGISTRATION_RUN_TAG, PARAMS_TAG, OBJECTIVE_TAG = "harness.registration_run_id", "harness.params", "harness.objective"
VAL_TAG, TEST_TAG, REPORT_TAG = "harness.val_figures", "harness.test_figures", "harness.report"
DECISION_TAG = "harness.champion_decision"


@dataclass(frozen=True)
class Registration:
    """A registered version: which trial, whether it holds the alias `champion` now, and why in one line."""

    name: str
    version: str
    trial: FrozenTrial
    figure: Figure | None
    champion: bool
    note: str
    run_id: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def register_best(spec: SweepSpec, log: Callable[[str], None]) -> Registration | None:
    """At a sweep's end: register its chosen trial under `registry.name` (nothing without one). A failure is a
    warning line that says how to retry, never a failed sweep: every trial is recorded by then."""
    if spec.registry is None:
        return None
    name = spec.registry.name
    try:
        registration = register_model(spec, None, name)
    except (HarnessError, MlflowException, OSError) as exc:
        message = exc.message if isinstance(exc, MlflowException) else str(exc)
        log(
            f"[yellow]warning: the chosen model was not registered as {escape(name)} ({escape(message)}); "
            f"retry with `harness export {escape(spec.name)} --register {escape(name)}`.[/]"
        )
        return None
    log(escape(registration_text(registration)))
    return registration


def registration_text(registration: Registration) -> str:
    """Two lines for the console: what was registered, then the champion decision."""
    return (
        f"Registered {run_name(registration.trial.number)} as {registration.uri} (run {registration.run_id}).\n"
        f"{registration.note}"
    )


def register_model(spec: SweepSpec, number: int | None, name: str) -> Registration:
    """Register trial `number` (None: the sweep's chosen trial) as a new version of `name`, and move the alias
    `champion` to it when it beats the champion (the module's docstring has the rule)."""
    problem = registry_name_problem(name)
    if problem:
        raise UsageError(f"`--register {name}`: {problem}.")
    trial = choose_trial(spec, number)
    nemo = kept_model(spec, trial)
    study = require_study(spec)
    parent = study.user_attrs.get(PARENT_ATTR)
    uri = spec.tracking_uri
    tracker = Tracker(uri, spec.experiment_name, create=False)
    if tracker.experiment_id is None or parent is None or tracker.sweep_run(parent) is None:
        raise StoreError(
            f"Sweep {spec.name!r} has no MLflow parent run in {uri} (experiment {spec.experiment_name!r}); register "
            "from the tracking store the sweep logged to (`tracking.uri`, or $HARNESS_TRACKING_URI)."
        )
    client = registry_client(uri)
    existing = _registered(client, name, study_uid(study) or "", trial.number)
    if existing is not None:
        figure = Figure.of_tags(existing.tags)
        holds = CHAMPION in (existing.aliases or [])
        note = f"{run_name(trial.number)} of sweep {spec.name} is already version {existing.version} of {name}; "
        note += "nothing registered" + (" (it is the champion)." if holds else ".")
        return Registration(name, str(existing.version), trial, figure, holds, note, existing.run_id or "")
    record = TrialRecord.of(trial)
    test = _test_figures(study.user_attrs.get(TEST_ATTR), trial.number)
    figure = decision_figure(spec, record.final, test)
    run_id = tracker.child_run(
        parent,
        name=f"{run_name(trial.number)}-registration",
        role=REGISTRATION_ROLE,
        params={**model_params(trial), "trial_number": trial.number},
        tags={
            "harness.registers": run_name(trial.number),
            "harness.registered_model": name,
            "optuna.study_name": spec.name,
            "optuna.trial_number": str(trial.number),
        },
    )
    predictions = figure_predictions(spec, trial.number, figure)
    if predictions is not None:  # the lines behind the figure: the next version's interval against this one
        tracker.client.log_artifact(run_id, str(predictions), PREDICTIONS_FOLDER)
    tags = {
        SWEEP_TAG: spec.name,
        STUDY_TAG: study.study_name,
        STUDY_UID_TAG: study_uid(study) or "",
        PARENT_TAG: parent,
        TRIAL_TAG: str(trial.number),
        TRIAL_RUN_TAG: record.mlflow_run_id or "",
        REGISTRATION_RUN_TAG: run_id,
        PARAMS_TAG: json.dumps(model_params(trial), sort_keys=True, default=str),
        OBJECTIVE_TAG: json.dumps(trial.values),
        VAL_TAG: json.dumps(record.final, sort_keys=True),
        TEST_TAG: json.dumps(test, sort_keys=True),
        REPORT_TAG: str(report_dir(spec) / "report.md"),
        **(figure.tags() if figure else {}),
        **({PREDICTIONS_TAG: f"{PREDICTIONS_FOLDER}/{predictions.name}"} if predictions else {}),
    }
    # MLflow resolves a `models:/<model id>` source through the fluent API's tracking URI: both in one context.
    with _fluent_tracking(uri), reported(MLFLOW_STORE, uri, TRACKING_SETTING):
        model_uri, model_id = _log_pyfunc(run_id, nemo)
        _ensure_registered_model(client, name)
        version = client.create_model_version(
            name,
            model_uri,
            run_id=run_id,
            tags=tags,
            description=description(
                spec, trial, figure, test, run_id=run_id, parent=parent, name=name, client=tracker.client
            ),
            model_id=model_id,
        )
        registered = str(version.version)  # the SQL store's is an int, the REST client's a string
        champion = champion_version(client, name)
        with tempfile.TemporaryDirectory() as held:
            held_file = held_predictions(client, champion, Path(held))
            interval = figure_interval(figure, predictions, held_file, spec.training.seed)
        move, note = champion_decision(name, registered, figure, champion, uri, interval)
        if move:
            client.set_registered_model_alias(name, CHAMPION, registered)
        client.set_model_version_tag(name, registered, DECISION_TAG, note)
    return Registration(name, registered, trial, figure, move, note, run_id)


def registry_client(uri: str) -> MlflowClient:
    """A client whose registry is the tracking store itself (a SQLite file or the sweep's server), whatever
    $MLFLOW_REGISTRY_URI says."""
    open_mlflow(uri)  # the store checks (a reachable server, a sane SQLite file), one line on failure
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def pip_requirements() -> list[str]:
    """What the pyfunc imports: the harness (installed from its checkout: not on PyPI), NeMo and MLflow, pinned to
    this environment's versions, so MLflow never infers an environment by loading the model."""
    requirements = [f"canary-sweep-harness=={harness.__version__}"]
    for package, extra in (("nemo_toolkit", "[asr]"), ("mlflow", "")):
        with contextlib.suppress(metadata.PackageNotFoundError):
            requirements.append(f"{package}{extra}=={metadata.version(package)}")
    return requirements


def _log_pyfunc(run_id: str, nemo: Path) -> tuple[str, str | None]:
    """The pyfunc with the `.nemo` as its artifact, logged on run `run_id` (inside `_fluent_tracking`): (model URI,
    MLflow 3 model id)."""
    import mlflow

    from harness.pyfunc import NEMO_ARTIFACT, CanaryTranscriber, signature

    behaviours = declared_behaviours(inspect_checkpoint(nemo).config)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=CanaryTranscriber(),
            artifacts={NEMO_ARTIFACT: str(nemo)},
            signature=signature(behaviours),
            pip_requirements=pip_requirements(),
        )
    return info.model_uri, getattr(info, "model_id", None)


@contextlib.contextmanager
def _fluent_tracking(uri: str) -> Iterator[None]:
    """MLflow's fluent API (which `pyfunc.log_model` uses) pointed at `uri` for a moment, with its log lines about
    pickling and input examples kept out of the console; the process's own setting is restored after."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    saved, env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    logger = logging.getLogger("mlflow")
    level = logger.level
    mlflow.set_tracking_uri(uri)
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logger.setLevel(level)
        mlflow.set_tracking_uri(saved)
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


def _test_figures(attr: object, number: int) -> dict[str, float]:
    """The `test_*` figures of trial `number` (the study's test attr holds the scored trial's)."""
    if not isinstance(attr, Mapping) or attr.get("trial") != number:
        return {}
    return {k: float(v) for k, v in (attr.get("metrics") or {}).items() if k.startswith("test_")}


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.create_registered_model(
            name,
            description=(
                "Fine-tuned Canary models chosen by canary-sweep harness sweeps; the alias `champion` is the one to "
                f'use: mlflow.pyfunc.load_model("models:/{name}@{CHAMPION}").'
            ),
        )
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def _registered(client: MlflowClient, name: str, uid: str, number: int) -> ModelVersion | None:
    """The version of `name` that already holds trial `number` of the study `uid` (every worker of a sweep
    reaches its end and registers; the first one does)."""
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return None
    for version in versions:
        tags = version.tags or {}
        if tags.get(STUDY_UID_TAG) == uid and tags.get(TRIAL_TAG) == str(number):
            return client.get_model_version(name, version.version)  # with its aliases
    return None
