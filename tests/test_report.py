"""`harness report`: the written report, its plots, provenance, best.yaml, MLflow comparison, HTML rendering.

One real sweep (3 trials of canary-tiny, conftest's `report_sweep`, shared with test_sweep.py and
test_export.py) serves every test here. It logs to a real `mlflow server` over HTTP, as a multi-host
sweep would, so the REST API comparison and the artifact upload are tested on the path users take.
"""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Literal

import optuna
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial
from PIL import Image
from rich.console import Console

from harness import plots, provenance
from harness.cli import main
from harness.directions import Direction
from harness.model_source import resolve_model
from harness.report import report_dir
from harness.report._console import memory_table
from harness.report._document import build_blocks
from harness.report._publish import make_plots
from harness.report._render import to_markdown
from harness.report._summary import SweepSummary, memory_rows, pruning_savings
from harness.report._trials import trial_rows
from harness.search_space import format_param, load_search_space
from harness.spec import BehaviourSpec, DataSpec, ObjectiveSpec, SweepSpec, load_spec
from harness.study import tell_out_of_memory
from harness.sweep_stores import open_sweep_stores
from harness.tracking import run_name
from harness.trial import Result
from harness.trial_dir import TrialDir
from harness.trial_record import OOM, TrialRecord
from tests.conftest import RETENTION_LIMIT_KEPT, SWEEP, spec_dict, write_spec
from tests.helpers import chromium, in_project, load_study, sha256

# -- the shared sweep (conftest.report_sweep) ------------------------------------------------


@pytest.fixture(scope="module")
def written(report_sweep) -> Path:
    """`harness report` once for this module; returns the report dir."""
    with in_project(report_sweep.project):
        assert main(["report", SWEEP]) == 0
        return report_dir(load_spec(SWEEP))


@pytest.fixture
def sweep(report_sweep, monkeypatch) -> SweepSpec:
    return report_sweep.enter(monkeypatch)


# -- the report's content ----------------------------------------------------------------------


def test_report_holds_decision_evidence_and_provenance(sweep, written):
    study = load_study(sweep)
    best = study.best_trial
    md = (written / "report.md").read_text()

    # The decision: the best trial's params, against the baseline, overall and per language pair.
    for name, value in best.params.items():
        assert f"| {name} | {format_param(value)} |" in md
    baseline = study.user_attrs["baseline"]
    for metric in ("val_wer", "val_wer_normalized", "val_bleu", "val_wer/en-en", "val_bleu/en-de"):
        assert f"| {metric} | {baseline[metric]:.4f} | {TrialRecord.of(best).final[metric]:.4f} |" in md
    # Which WER decided, and one BLEU: the overall figure is the only translation pair's figure.
    assert "The decision was made on WER on the text as written (case and punctuation count)" in md
    assert baseline["val_bleu"] == pytest.approx(baseline["val_bleu/en-de"])
    worse = best.value >= baseline["val_wer"]  # objective wer, minimised
    assert ("does not beat the zero-shot baseline" in md) == worse
    test = study.user_attrs["test"]
    assert test["trial"] == best.number
    for metric in ("test_wer", "test_wer_normalized", "test_bleu", "test_wer/en-en", "test_bleu/en-de"):
        assert f"| {metric} | {test['metrics'][metric]:.4f} |" in md
    # How sure: each comparison with its interval, from the runs' predictions (the runner-up's checkpoint is gone).
    interval = r"[+-]\d\.\d{3} (WER|BLEU)( en-\w\w)? \[-?\d\.\d{3}, -?\d\.\d{3}\]( \(includes 0: not separable\))?"
    for split, figure in [("validation", "wer"), ("test", "bleu")]:
        row = rf"^\| {split} \| the zero-shot baseline \| {figure} \| {interval} \|$"
        assert re.search(row, md, re.M), (split, figure)
    assert re.search(r"^\| validation \| trial-000\d \(runner-up\) \| wer/en-en \| ", md, re.M)
    assert re.search(r"test set against trial-000\d \(runner-up\): not scored on the test set\.", md)
    # Every trial, with its state and the reason it did not complete.
    for t in study.trials:
        row = next(line for line in md.splitlines() if line.startswith(f"| {run_name(t.number)} | {t.state.name} |"))
        if t.state == TrialState.PRUNED:
            assert f"pruned at step {TrialRecord.of(t).pruned_at}" in row
    # The old domain (the retention set): best trial against the pretrained model, a verdict, each trial's change.
    final = TrialRecord.of(best).final
    for metric in ("retention_wer", "retention_wer_normalized", "retention_bleu", "retention_wer/en-en"):
        assert f"| {metric} | {baseline[metric]:.4f} | {final[metric]:.4f} |" in md
    increase = final["retention_wer"] - baseline["retention_wer"]
    words = "loses ground on its old domain" if increase > 0 else "keeps its old domain"
    before, after = baseline["retention_wer"], final["retention_wer"]
    limit = f"allowed +{RETENTION_LIMIT_KEPT:g}"
    verdict = f"{words}: retention WER {before:.4f} zero-shot -> {after:.4f} ({increase:+.4f}, {limit})."
    assert f"Retention: {run_name(best.number)} {verdict}" in md
    assert "| retention_wer | retention change |" in md and "forgets:" not in md  # all feasible
    # Memory: per freeze mode, the largest batch_duration that fit; nothing ran out of memory.
    for mode in {t.params["freeze"] for t in study.trials}:
        fit = max(t.params["batch_duration"] for t in study.trials if t.params["freeze"] == mode)
        assert f"| {mode} | {format_param(fit)} | none |" in md
    # Compute saved by pruning, from the recorded steps.
    counted = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    trained = sum(r.steps or r.pruned_at or 0 for r in map(TrialRecord.of, counted))
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
    assert sha256(resolve_model(sweep.model)) in md
    for role, manifest in [
        *((r, Path(getattr(sweep.data, r))) for r in ("train", "validation", "test")),
        ("retention", Path(sweep.data.retention[0])),
    ]:
        lines = manifest.read_text().splitlines()
        hours = sum(json.loads(line)["duration"] for line in lines) / 3600
        content = provenance.manifest_file(role, str(manifest)).sha256  # audio + fields, not paths
        assert f"| {role} | {manifest.resolve()} | {len(lines)} | {hours:.4f} | {content} |" in md
    assert re.search(r"^\| hardware \(where this report was made\) \| (CPU: .+, \d+ cores|\d+ x .+) \|$", md, re.M)
    for t in study.trials:
        assert f"| {run_name(t.number)} | {TrialRecord.of(t).seed} |" in md
    assert f"seed {sweep.sampler.seed}" in md


def test_best_yaml_is_the_best_config_headed_by_the_command_that_reruns_it(sweep, written):
    best = load_study(sweep).best_trial
    text = (written / "best.yaml").read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    command = f"harness reproduce {SWEEP} --trial {best.number}"
    assert any(line.endswith(command) for line in header)
    config = TrialDir.of(sweep, best.number).config
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
    parent = load_study(sweep).user_attrs["mlflow_parent_run_id"]
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
    study = load_study(sweep)
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
    page = (written / "report.html").read_text()
    assert "<script" not in page and 'src="http' not in page and "<link" not in page  # self-contained
    best = load_study(sweep).best_trial
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
    proc = chromium(
        tmp_path / "profile",
        f"--screenshot={screenshot}",
        "--window-size=1400,4000",
        (written / "report.html").as_uri(),
    )
    assert proc.returncode == 0 and screenshot.is_file(), proc.stderr[-3000:]
    shot = Image.open(screenshot)
    assert shot.size == (1400, 4000)
    assert _not_flat(shot)
    # Rendered content, not a blank or error page: a good share of the page is ink and plot colour.
    grey = shot.convert("L")
    assert sum(1 for v in grey.getdata() if v < 200) > 0.01 * shot.size[0] * shot.size[1]


def _not_flat(image: Image.Image) -> bool:
    """More than one colour (`getcolors` gives None past `maxcolors`)."""
    return image.convert("RGB").getcolors(maxcolors=1) is None


# -- plots on their own (synthetic studies: no training needed) ---------------------------------


SPACE = {"lr": FloatDistribution(1e-4, 1e-2, log=True), "freeze": CategoricalDistribution(["none", "encoder"])}


def _synthetic(directions: list[Literal["minimize", "maximize"]], values: list) -> optuna.Study:
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
    assert plots.learning_curves([], tmp_path).path is None

    several = _synthetic(["minimize"], [0.5, 0.3, None, 0.4, 0.2, 0.35])
    drawn = [
        plots.param_importance(several, tmp_path),
        plots.objective_history(several.trials, Direction.MINIMIZE, tmp_path),
        plots.objective_vs_params(several.trials, SPACE, tmp_path),
        plots.learning_curves(
            [plots.Curve("trial-0004", [{"step": 10, "val_wer": 0.5}, {"step": 20, "val_wer": 0.2}])], tmp_path
        ),
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


def test_learning_curves_show_the_top_complete_and_the_best_pruned_trials(tmp_path, monkeypatch):
    """Pruned trials are drawn dashed, ending with an x at the step they were stopped; an out-of-memory
    trial was not pruned, and a trial without a history here (another host's) is passed over."""
    monkeypatch.chdir(tmp_path)
    spec = SweepSpec(name="curves", model="canary-tiny", data=DataSpec("t.json", "v.json"), search_space="none.yaml")
    study = optuna.create_study()
    complete = [0.5, 0.3, 0.4, 0.2, 0.35]  # trials 0-4
    pruned = [0.7, 0.1, 0.65, 0.8, 0.6, 0.9, 0.75, 0.62]  # trials 5-12: 6 ran out of memory, 7 has no result here
    for number, value in enumerate(complete + pruned):
        is_pruned = number >= len(complete)
        stop = 10 * (1 + number % 3) if is_pruned else 30
        attrs = TrialRecord.attrs(fail_reason=OOM) if number == 6 else TrialRecord.attrs(pruned_at=stop)
        study.add_trial(
            create_trial(
                params={"lr": 1e-3},
                distributions={"lr": SPACE["lr"]},
                state=TrialState.PRUNED if is_pruned else TrialState.COMPLETE,
                value=value,
                intermediate_values={stop: value},
                user_attrs=attrs if is_pruned else {},
            )
        )
        if number != 7:
            history = [{"step": step, "val_wer": value + (stop - step) / 100} for step in range(10, stop + 1, 10)]
            trial_dir = TrialDir.of(spec, number)
            trial_dir.path.mkdir(parents=True)
            Result(state="pruned" if is_pruned else "complete", history=history).write(trial_dir)
    summary = SweepSummary(study, study.get_trials(), study.best_trial, None)
    curves = {p.name: p for p in make_plots(spec, summary, tmp_path / "plots")}["learning_curves"]

    assert curves.path is not None and curves.figure is not None
    assert (
        curves.title == "Learning curves (val_wer): top 3 complete trials and 5 best pruned (dashed, x where stopped)"
    )
    (ax,) = curves.figure.axes
    lines = ax.get_lines()
    shown = [int(line.get_label().split()[0].removeprefix("trial-")) for line in lines]
    assert shown == [3, 1, 4, 9, 12, 5, 11, 8]  # best first; 6 (oom), 7 (no history) and 10 (worst) left out
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [line.get_label() for line in lines]
    for number, line in zip(shown, lines, strict=True):
        steps = list(line.get_xdata())
        if number < len(complete):
            assert (line.get_linestyle(), line.get_marker(), steps[-1]) == ("-", "o", 30)
            assert line.get_label() == f"{run_name(number)} (complete)"
        else:  # dashed, ending at the stop with an x there only
            stop = 10 * (1 + number % 3)
            assert (line.get_linestyle(), line.get_marker(), steps[-1]) == ("--", "x", stop)
            assert line.get_markevery() == [len(steps) - 1]
            assert line.get_label() == f"{run_name(number)} (pruned at step {stop})"


def test_the_report_says_whether_each_custom_behaviour_was_learnt(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tokens = {
        "terse": BehaviourSpec(on="<|spltoken0|>", off="<|spltoken1|>", field="terse"),
        "polite": BehaviourSpec(on="<|spltoken2|>", off="<|spltoken3|>", field="polite", default=False),
    }
    spec = SweepSpec(
        name="taught",
        model="canary-tiny",
        data=DataSpec("t.json", "v.json"),
        search_space="none.yaml",
        behaviours=tokens,
    )
    baseline = {"val_wer": 0.9, "val_wer/en-en": 0.9, "val_wer/terse_on": 0.95, "val_wer/terse_off": 0.85}
    baseline |= {"val_wer/polite_on": 0.5, "val_wer/polite_off": 0.9, "val_bleu/terse_on": 0.1}
    finals = [  # trial 0 is the best: terse learnt, polite on lines worse than zero-shot
        {"val_wer": 0.15, "val_wer/terse_on": 0.12, "val_wer/terse_off": 0.2, "val_wer/polite_on": 0.6},
        {"val_wer": 0.5, "val_wer/terse_on": 0.9, "val_wer/terse_off": 0.3, "val_wer/polite_on": 0.5},
    ]
    study = optuna.create_study()
    for final in finals:
        final = {**final, "val_wer/polite_off": 0.1, "val_bleu/terse_on": 0.4}
        attrs = TrialRecord.attrs(final=final)
        study.add_trial(
            create_trial(
                params={"lr": 1e-3}, distributions={"lr": SPACE["lr"]}, value=final["val_wer"], user_attrs=attrs
            )
        )
    summary = SweepSummary(study, study.get_trials(), study.best_trial, baseline)
    md = to_markdown(build_blocks(spec, summary, [], None), tmp_path)

    section = md[md.index("## Custom behaviours") : md.index("## Test set")]
    assert "`terse`: on WER 0.9500 -> 0.1200, off WER 0.8500 -> 0.2000 (zero-shot -> best trial): learnt." in section
    assert (
        "`polite`: on WER 0.5000 -> 0.6000, off WER 0.9000 -> 0.1000 (zero-shot -> best trial): not learnt: " in section
    )
    assert "the on lines got worse." in section
    for row in (
        "| val_wer/terse_on | 0.9500 | 0.1200 | -0.8300 | lower |",
        "| val_wer/terse_off | 0.8500 | 0.2000 | -0.6500 | lower |",
        "| val_bleu/terse_on | 0.1000 | 0.4000 | +0.3000 | higher |",
    ):
        assert row in section and md.count(row) == 1  # not repeated in the table against the baseline
    assert "| val_wer/en-en | 0.9000 | 0.1500 |" not in section and "| val_wer/en-en |" in md
    # Every complete trial, best first, with the zero-shot baseline on top.
    assert (
        "| run | objective | val_wer/polite_on | val_wer/polite_off | val_wer/terse_on | val_wer/terse_off |" in section
    )
    assert "| zero-shot baseline |  | 0.5000 | 0.9000 | 0.9500 | 0.8500 |" in section
    assert section.index("| trial-0000 | 0.1500 | 0.6000 |") < section.index("| trial-0001 | 0.5000 | 0.5000 |")
    # A baseline scored before behaviours were (a resumed older sweep) is not compared with, nor a crash.
    older = SweepSummary(study, study.get_trials(), study.best_trial, {"val_wer": 0.9})
    md = to_markdown(build_blocks(spec, older, [], None), tmp_path)
    assert "`terse`: best trial on WER 0.1200, off WER 0.2000; no zero-shot baseline figures to compare with" in md
    plain = SweepSpec(name="plain", model="canary-tiny", data=DataSpec("t.json", "v.json"), search_space="none.yaml")
    assert "Custom behaviours" not in to_markdown(build_blocks(plain, summary, [], None), tmp_path)


def test_a_behaviour_named_answer_leaves_its_bleu_higher_is_better_in_every_table(tmp_path, monkeypatch):
    """A behaviour's name is a group, never the figure: `retention_bleu/answer_on` is a BLEU like any other."""
    monkeypatch.chdir(tmp_path)
    spec = SweepSpec(
        name="answer",
        model="canary-tiny",
        data=DataSpec("t.json", "v.json", retention=["r.json"]),
        search_space="none.yaml",
        objective=ObjectiveSpec(metric="bleu"),
        behaviours={"answer": BehaviourSpec(on="<|spltoken0|>", off="<|spltoken1|>", field="answer")},
    )
    figures = ("val_bleu", "val_bleu/answer_on", "val_bleu/answer_off", "retention_wer", "retention_bleu")
    figures += ("retention_wer/answer_on", "retention_bleu/answer_on")
    baseline = dict(zip(figures, (0.1, 0.1, 0.2, 0.1, 0.6, 0.1, 0.6), strict=True))
    final = dict(zip(figures, (0.4, 0.5, 0.3, 0.2, 0.5, 0.2, 0.5), strict=True))
    study = optuna.create_study(direction=spec.direction)
    attrs = TrialRecord.attrs(final=final)
    study.add_trial(create_trial(params={"lr": 1e-3}, distributions={"lr": SPACE["lr"]}, value=0.4, user_attrs=attrs))
    summary = SweepSummary(study, study.get_trials(), study.best_trial, baseline)
    md = to_markdown(build_blocks(spec, summary, [], None), tmp_path)

    retention = md[md.index("## Retention") : md.index("## Custom behaviours")]
    rows = [line for line in retention.splitlines() if line.startswith("| retention_")]
    assert rows == [
        "| retention_wer | 0.1000 | 0.2000 | +0.1000 | lower |",
        "| retention_wer/answer_on | 0.1000 | 0.2000 | +0.1000 | lower |",
        "| retention_bleu | 0.6000 | 0.5000 | -0.1000 | higher |",
        "| retention_bleu/answer_on | 0.6000 | 0.5000 | -0.1000 | higher |",
    ]
    behaviours = md[md.index("## Custom behaviours") : md.index("## Test set")]
    assert "| val_bleu/answer_on | 0.1000 | 0.5000 | +0.4000 | higher |" in behaviours
    assert "`answer`: on BLEU 0.1000 -> 0.5000, off BLEU 0.2000 -> 0.3000 (zero-shot -> best trial): learnt." in md


READ_ONLY = (  # prints what reading a sweep loaded, then what the supervisor's modules add
    "import sys; from rich.console import Console; import harness.cli; from harness.export import choose_trial; "
    "from harness.report import print_report, summarize; from harness.spec import load_spec; spec = load_spec('read'); "
    "print_report(spec, Console(quiet=True)); summarize(spec); choose_trial(spec, None); "
    "heavy = {'torch', 'lightning', 'nemo'}; print(sorted((heavy | {'harness.pruners'}) & set(sys.modules))); "
    "import harness.sweep; print(sorted(heavy & set(sys.modules)))"
)


def test_reading_a_sweep_loads_neither_torch_nor_lightning_nor_a_pruner(project):
    """`harness report` (also at the end of every sweep) and export's choice of trial read the study without a
    pruner (the spec's warm-up), torch, Lightning or NeMo; the supervisor that plans a reproduction builds the
    pruner it asks and tells with, and stays free of torch too."""
    spec = load_spec(write_spec(project, "read", spec_dict({"train": "t.json", "validation": "v.json"})))
    space = load_search_space(spec.search_space)
    study = open_sweep_stores(spec, space, params={}, tags={}).study
    params = {"lr": 1e-3, "batch_duration": 10, "freeze": "none", "use_loss_mask_for_prompt": True}
    study.add_trial(create_trial(params=params, distributions=space, value=0.3))

    done = subprocess.run([sys.executable, "-c", READ_ONLY], cwd=project, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]", "[]"]


# -- out of memory (a synthetic study: no training needed) -------------------------------------


def _trial_that_ran_out_of_memory(study: optuna.Study, params: dict, space: dict) -> None:
    """Recorded as the supervisor records it: `oom`, then PRUNED and infeasible; this one after a validation."""
    study.enqueue_trial(params)
    trial = study.ask(space)
    trial.report(0.2, 10)
    TrialRecord.write(trial, fail_reason=OOM, requeued=False)
    tell_out_of_memory(study, trial)


def test_out_of_memory_trials_say_oom_and_bound_batch_duration_per_freeze_mode():
    space = {**SPACE, "batch_duration": CategoricalDistribution([10, 20, 40, 80])}
    study = optuna.create_study()

    def add(size, freeze, state=TrialState.COMPLETE, **record):
        params = {"lr": 1e-3, "freeze": freeze, "batch_duration": size}
        value = {"value": 0.5} if state == TrialState.COMPLETE else {"intermediate_values": {10: 0.9}}
        attrs = TrialRecord.attrs(**record)
        study.add_trial(create_trial(params=params, distributions=space, state=state, user_attrs=attrs, **value))

    add(10, "none", steps=20)
    add(20, "none", TrialState.PRUNED, pruned_at=10)
    _trial_that_ran_out_of_memory(study, {"lr": 1e-3, "freeze": "none", "batch_duration": 40}, space)
    add(80, "encoder", TrialState.FAIL, fail_reason=OOM)  # as older harnesses recorded an OOM
    add(10, "encoder", TrialState.FAIL, fail_reason="error: RuntimeError: broken")  # says nothing on memory
    summary = SweepSummary(study, study.get_trials(), study.best_trial, None)

    assert memory_rows(summary.trials) == [["encoder", "-", "80"], ["none", "20", "40"]]
    _, rows = trial_rows(summary)
    states = {row[0]: (row[1], row[2], row[-1]) for row in rows}
    assert states["trial-0002"] == ("OOM", "", "oom")  # Optuna keeps 0.2 as the pruned value; the report does not
    assert states["trial-0003"] == ("OOM", "", "oom")
    assert [row[0] for row in rows][:2] == ["trial-0000", "trial-0001"]
    savings = pruning_savings(summary.trials, max_steps=20)  # an OOM is not a saving
    assert (savings.trials, savings.trained, savings.unpruned) == (2, 30, 40)
    out = io.StringIO()
    Console(file=out, width=200).print(memory_table(summary))
    assert "Memory: largest batch_duration that fit per freeze mode" in out.getvalue()
