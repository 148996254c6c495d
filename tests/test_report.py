"""`harness report`: the written report, its plots, provenance, best.yaml, MLflow comparison, HTML rendering.

One real sweep (3 trials of canary-tiny) serves every test here and in test_export.py. It logs to
a real `mlflow server` over HTTP, as a multi-host sweep would, so the REST API comparison and the
artifact upload are tested on the path users take.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial
from PIL import Image
from rich.console import Console

from harness import plots, provenance
from harness.cli import main
from harness.model_source import resolve_model
from harness.report import SweepSummary, make_plots, report_dir
from harness.search_space import format_param
from harness.spec import DataSpec, SweepSpec, load_spec
from harness.study import open_storage
from harness.sweep import Supervisor
from harness.tracking import run_name
from tests.conftest import SEARCH_SPACE, spec_dict

SWEEP = "reported"
CHROMIUM = Path("/usr/bin/chromium")
ENV_KEYS = ("HARNESS_STORAGE", "HARNESS_TRACKING_URI")
SERVER_START_SECONDS = 180


# -- the shared sweep (also used by test_export.py) --------------------------------------------


@contextmanager
def in_project(path: Path) -> Iterator[None]:
    """CWD = `path` with no harness URIs in the environment; both restored afterwards."""
    cwd, saved = os.getcwd(), {k: os.environ.pop(k) for k in ENV_KEYS if k in os.environ}
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(cwd)
        os.environ.update(saved)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(root: Path) -> tuple[subprocess.Popen, str]:
    """`mlflow server` on a free loopback port, sqlite backend and artifacts under `root`."""
    root.mkdir(parents=True)
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}: {(root / 'server.log').read_text()}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=5) as response:
                if response.status == 200:
                    return proc, uri
        except OSError:
            time.sleep(1)
    stop_server(proc)
    raise RuntimeError(f"mlflow server did not answer in {SERVER_START_SECONDS}s: {(root / 'server.log').read_text()}")


def stop_server(proc: subprocess.Popen) -> None:
    """The server forks workers: signal its whole process group."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@dataclass
class SharedSweep:
    """A finished sweep's project dir and the MLflow server it logged to."""

    project: Path
    uri: str

    def enter(self, monkeypatch: pytest.MonkeyPatch) -> SweepSpec:
        """Make the project the CWD for one test and return its spec."""
        monkeypatch.chdir(self.project)
        for key in ENV_KEYS:
            monkeypatch.delenv(key, raising=False)
        return load_spec(SWEEP)


def shared_sweep(tmp_path_factory: pytest.TempPathFactory, speech_data: dict, config: pytest.Config) -> SharedSweep:
    """Run the sweep once per pytest session, whichever test module asks first.

    The marker file lives in the session's base temp dir, so test_report.py, test_export.py and
    test_sweep.py (each with its own session fixture) find the same sweep; the server stops when the session ends.
    """
    root = tmp_path_factory.getbasetemp() / "report-sweep"
    marker = root / "sweep.json"
    if marker.is_file():
        state = json.loads(marker.read_text())
        if "error" in state:
            pytest.fail(f"the shared report sweep failed earlier: {state['error']}")
        return SharedSweep(Path(state["project"]), state["uri"])
    proc, uri = start_mlflow_server(root / "server")
    config.add_cleanup(lambda: stop_server(proc))
    project = root / "project"
    (project / "sweeps").mkdir(parents=True)
    (project / "search_spaces").mkdir()
    (project / "search_spaces" / "test.yaml").write_text(yaml.safe_dump(SEARCH_SPACE))
    # full: baseline and test set too; no pruning, so test_sweep.py can check every trial's whole record
    spec = spec_dict(speech_data, full=True, tracking={"uri": uri}, pruner={"type": "none"})
    (project / "sweeps" / f"{SWEEP}.yaml").write_text(yaml.safe_dump(spec))
    try:
        with in_project(project):
            Supervisor(load_spec(SWEEP), console=Console(file=io.StringIO(), width=200)).run()
    except BaseException as exc:
        marker.write_text(json.dumps({"error": repr(exc)}))
        raise
    marker.write_text(json.dumps({"project": str(project), "uri": uri}))
    return SharedSweep(project, uri)


@pytest.fixture(scope="session")
def report_sweep(tmp_path_factory, speech_data, pytestconfig) -> SharedSweep:
    return shared_sweep(tmp_path_factory, speech_data, pytestconfig)


@pytest.fixture(scope="module")
def written(report_sweep) -> Path:
    """`harness report` once for this module; returns the report dir."""
    with in_project(report_sweep.project):
        assert main(["report", SWEEP]) == 0
        return report_dir(load_spec(SWEEP))


@pytest.fixture
def sweep(report_sweep, monkeypatch) -> SweepSpec:
    return report_sweep.enter(monkeypatch)


def _study(spec: SweepSpec) -> optuna.Study:
    return optuna.load_study(study_name=spec.name, storage=open_storage(spec.storage_url))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the report's content ----------------------------------------------------------------------


def test_report_holds_decision_evidence_and_provenance(sweep, written):
    study = _study(sweep)
    best = study.best_trial
    md = (written / "report.md").read_text()

    # The decision: the best trial's params, against the baseline, overall and per language pair.
    for name, value in best.params.items():
        assert f"| {name} | {format_param(value)} |" in md
    baseline = study.user_attrs["baseline"]
    for metric in ("val_wer", "val_wer_normalized", "val_bleu", "val_wer/en-en", "val_bleu/en-de"):
        assert f"| {metric} | {baseline[metric]:.4f} | {best.user_attrs['final'][metric]:.4f} |" in md
    # Which WER decided, and one BLEU: the overall figure is the only translation pair's figure.
    assert "The decision was made on WER on the text as written (case and punctuation count)" in md
    assert baseline["val_bleu"] == pytest.approx(baseline["val_bleu/en-de"])
    worse = best.value >= baseline["val_wer"]  # objective wer, minimised
    assert ("does not beat the zero-shot baseline" in md) == worse
    test = study.user_attrs["test"]
    assert test["trial"] == best.number
    for metric in ("test_wer", "test_wer_normalized", "test_bleu", "test_wer/en-en", "test_bleu/en-de"):
        assert f"| {metric} | {test['metrics'][metric]:.4f} |" in md
    # Every trial, with its state and the reason it did not complete.
    for t in study.trials:
        row = next(line for line in md.splitlines() if line.startswith(f"| {run_name(t.number)} | {t.state.name} |"))
        if t.state == TrialState.PRUNED:
            assert f"pruned at step {t.user_attrs['pruned_at']}" in row
    # Compute saved by pruning, from the recorded steps.
    counted = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    trained = sum(t.user_attrs.get("steps") or t.user_attrs["pruned_at"] for t in counted)
    unpruned = len(counted) * sweep.budget.max_steps
    assert f"trained {trained} steps; without pruning they would have trained {unpruned}" in md
    assert f"saved {100 * (1 - trained / unpruned):.1f}%" in md
    # The spec and the search space, verbatim.
    assert Path(sweep.source).read_text().strip() in md
    assert Path(sweep.search_space).read_text().strip() in md
    # Provenance: versions, commit, checkpoint and manifests by content, hardware, seeds.
    for package in ("harness", "nemo_toolkit", "torch", "lightning", "optuna", "mlflow"):
        assert re.search(rf"^\| {package} \| \S+ \|$", md, re.M), package
    assert re.search(r"^\| harness git commit \| [0-9a-f]{40} \|$", md, re.M)
    assert re.search(r"^\| working tree dirty \| (yes|no)", md, re.M)
    assert _sha256(resolve_model(sweep.model)) in md
    for role in ("train", "validation", "test"):
        manifest = Path(getattr(sweep.data, role))
        lines = manifest.read_text().splitlines()
        hours = sum(json.loads(line)["duration"] for line in lines) / 3600
        content = provenance.manifest_record(role, str(manifest)).sha256  # audio + fields, not paths
        assert f"| {role} | {manifest.resolve()} | {len(lines)} | {hours:.4f} | {content} |" in md
    assert re.search(r"^\| hardware \(where this report was made\) \| (CPU: .+, \d+ cores|\d+ x .+) \|$", md, re.M)
    for t in study.trials:
        assert f"| {run_name(t.number)} | {t.user_attrs['seed']} |" in md
    assert f"seed {sweep.sampler.seed}" in md


def test_best_yaml_is_the_best_config_headed_by_the_command_that_reruns_it(sweep, written):
    best = _study(sweep).best_trial
    text = (written / "best.yaml").read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    command = f"harness reproduce {SWEEP} --trial {best.number}"
    assert any(line.endswith(command) for line in header)
    config = sweep.trials_dir / run_name(best.number) / "config.yaml"
    assert text.endswith(config.read_text())
    assert OmegaConf.to_container(OmegaConf.load(written / "best.yaml")) == OmegaConf.to_container(
        OmegaConf.load(config)
    )
    # The command in the header is one the CLI understands, and it reaches reproduce_trial.
    calls = []
    import harness.sweep

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(harness.sweep, "reproduce_trial", lambda spec, number, console: calls.append((spec.name, number)))
        assert main(command.split()[1:]) == 0
    assert calls == [(SWEEP, best.number)]


def test_report_is_logged_on_the_sweep_parent_run(sweep, written, report_sweep):
    client = MlflowClient(report_sweep.uri)
    parent = _study(sweep).user_attrs["mlflow_parent_run_id"]
    assert client.get_run(parent).data.tags["harness.role"] == "sweep"
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/report.md", "report/report.html", "report/best.yaml", "report/plots"} <= logged
    downloaded = Path(client.download_artifacts(parent, "report/report.md", str(sweep.state_dir)))
    assert downloaded.read_text() == (written / "report.md").read_text()


# -- comparison in MLflow, through the tracking server's REST API --------------------------------


def _rest(uri: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{uri}/api/2.0/mlflow/{path}",
        data=data,
        headers={"Content-Type": "application/json"},
        method="POST" if data else "GET",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_trials_compare_in_the_mlflow_server_best_first(sweep, report_sweep):
    study = _study(sweep)
    parent = study.user_attrs["mlflow_parent_run_id"]
    experiment = _rest(report_sweep.uri, f"experiments/get-by-name?experiment_name={SWEEP}")["experiment"]
    found = _rest(
        report_sweep.uri,
        "runs/search",
        {
            "experiment_ids": [experiment["experiment_id"]],
            "filter": f"tags.mlflow.parentRunId = '{parent}'",
            "order_by": ["metrics.objective ASC"],
            "max_results": 100,
        },
    )["runs"]

    def field(run: dict, kind: str) -> dict:
        return {item["key"]: item["value"] for item in run["data"].get(kind, [])}

    names = [field(r, "tags")["mlflow.runName"] for r in found]
    assert sorted(names) == sorted(["baseline", *(run_name(t.number) for t in study.trials)])
    objectives = [field(r, "metrics")["objective"] for r in found]
    assert objectives == sorted(objectives)
    finished = [
        (field(r, "tags")["mlflow.runName"], field(r, "metrics")["objective"])
        for r in found
        if field(r, "tags")["harness.role"] == "trial" and r["info"]["status"] == "FINISHED"
    ]
    assert finished[0][1] == pytest.approx(study.best_value)
    tied_first = [name for name, value in finished if value == finished[0][1]]
    assert run_name(study.best_trial.number) in tied_first  # the best trial sorts first (ties: any order)
    # Params as logged are readable: no float noise such as 0.00030000000000000003.
    for run in found:
        params = field(run, "params")
        if "lr" in params:
            trial = study.trials[int(params["trial_number"])]
            assert params["lr"] == format_param(trial.params["lr"])
            assert len(Decimal(params["lr"]).normalize().as_tuple().digits) <= 4


# -- the HTML report in a real browser ---------------------------------------------------------


def test_html_report_renders_in_headless_chromium(sweep, written, tmp_path):
    assert CHROMIUM.is_file(), (
        f"{CHROMIUM} is missing: run scripts/setup.sh as root, or `apt-get install -y chromium chromium-driver`"
    )
    page = (written / "report.html").read_text()
    assert "<script" not in page and 'src="http' not in page and "<link" not in page  # self-contained
    best = _study(sweep).best_trial
    for name, value in best.params.items():
        assert f"<td>{name}</td><td>{format_param(value)}</td>" in page
    images = re.findall(r'<img alt="([^"]+)" width="(\d+)" height="(\d+)" src="data:image/png;base64,([^"]+)"', page)
    titles = [title for title, *_ in images]
    assert {"Objective by trial", "Objective against each parameter"} <= set(titles)
    assert any(t.startswith("Learning curves") for t in titles)
    assert "Pareto front" not in titles  # single-objective study
    for title, width, height, data in images:
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        assert image.format == "PNG", title
        assert image.size == (int(width), int(height)), title
        assert _not_flat(image), title

    screenshot = tmp_path / "report.png"
    proc = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={screenshot}",
            "--window-size=1400,4000",
            (written / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0 and screenshot.is_file(), proc.stderr[-3000:]
    shot = Image.open(screenshot)
    assert shot.size == (1400, 4000)
    assert _not_flat(shot)
    # Rendered content, not a blank or error page: a good share of the page is ink and plot colour.
    grey = shot.convert("L")
    assert sum(1 for v in grey.getdata() if v < 200) > 0.01 * shot.size[0] * shot.size[1]


def _not_flat(image: Image.Image) -> bool:
    return any(low != high for low, high in image.convert("RGB").getextrema())


# -- plots on their own (synthetic studies: no training needed) ---------------------------------


SPACE = {"lr": FloatDistribution(1e-4, 1e-2, log=True), "freeze": CategoricalDistribution(["none", "encoder"])}


def _synthetic(directions: list[str], values: list) -> optuna.Study:
    study = optuna.create_study(directions=directions)
    for i, value in enumerate(values):
        params = {"lr": 1e-4 * (2**i), "freeze": ["none", "encoder"][i % 2]}
        if value is None:
            study.add_trial(
                create_trial(params=params, distributions=SPACE, state=TrialState.PRUNED, intermediate_values={10: 0.9})
            )
        else:
            study.add_trial(
                create_trial(
                    params=params,
                    distributions=SPACE,
                    **({"values": value} if isinstance(value, list) else {"value": value}),
                )
            )
    return study


def test_plots_skip_with_a_reason_and_draw_what_the_data_supports(tmp_path):
    one = _synthetic(["minimize"], [0.5, None])
    skipped = plots.param_importance(one, tmp_path)
    assert skipped.path is None and "at least 2 complete trials" in skipped.note
    assert plots.learning_curves({}, tmp_path).path is None

    several = _synthetic(["minimize"], [0.5, 0.3, None, 0.4, 0.2, 0.35])
    drawn = [
        plots.param_importance(several, tmp_path),
        plots.objective_history(several.trials, "minimize", tmp_path),
        plots.objective_vs_params(several.trials, SPACE, tmp_path),
        plots.learning_curves({"trial-0004": [{"step": 10, "val_wer": 0.5}, {"step": 20, "val_wer": 0.2}]}, tmp_path),
    ]
    for plot in drawn:
        assert plot.path is not None, plot.note
        image = Image.open(plot.path)
        assert image.size == plot.size and _not_flat(image)
    assert drawn[2].size[0] == 2 * round(plots.PANEL[0] * plots.DPI)  # one panel per parameter


def test_pareto_front_only_for_multi_objective_studies(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = SweepSpec(name="mo", model="canary-tiny", data=DataSpec("train.json", "val.json"), search_space="none.yaml")
    multi = _synthetic(["minimize", "maximize"], [[0.5, 0.2], [0.3, 0.1], [0.4, 0.4], [0.6, 0.3]])
    single = _synthetic(["minimize"], [0.5, 0.3])
    for study, expected in ((multi, True), (single, False)):
        trials = study.get_trials()
        summary = SweepSummary(study, trials, None, None)
        names = {p.name: p for p in make_plots(spec, summary, tmp_path / study.study_name)}
        assert ("pareto_front" in names) == expected
    front = plots.pareto_front(multi, tmp_path)
    assert front.path is not None and Image.open(front.path).size == front.size
