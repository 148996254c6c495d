"""The chosen model lands in the MLflow Model Registry (`harness export --register`, `registry.name` at a sweep's end).

A sweep's records are written here directly (study, parent run, trial runs, figures), each trial's `model.nemo` a
copy of the packaged canary-tiny twin, so nothing trains; the registry is a real SQLite MLflow store, and the
registered pyfunc decodes real synthetic speech (the retention set: the twin's own domain) through the same path
as `harness transcribe`.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow.entities.model_registry import ModelVersion, ModelVersionTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from harness.behaviours import CONFIG_KEY
from harness.champion import CHAMPION, DIGEST_TAG, FIGURE_TAG, FIGURE_VALUE_TAG, Figure, champion_decision
from harness.cli import main
from harness.directions import Direction
from harness.errors import SpecError
from harness.intervals import Interval
from harness.names import PARENT_ATTR, TEST_ATTR, TEST_DIR, run_name
from harness.provenance import manifest_file
from harness.registry import (
    DECISION_TAG,
    PARAMS_TAG,
    PARENT_TAG,
    REPORT_TAG,
    SWEEP_TAG,
    TRIAL_RUN_TAG,
    TRIAL_TAG,
    register_best,
    register_model,
)
from harness.scoring import Transcript, write_predictions
from harness.spec import RegistrySpec, SweepSpec, load_spec
from harness.start_from import load_space
from harness.sweep_stores import open_sweep_stores
from harness.tracking import DIGEST_CHARS, TRIAL_ROLE
from harness.transcription import transcribe_files
from harness.trial_dir import TrialDir
from harness.trial_record import TrialRecord
from tests.conftest import SEARCH_SPACE, spec_dict, write_spec
from tests.helpers import ENV_KEYS, in_project, load_study

SWEEP = "registered"
# Trials 0..3 by their validation WER (trial 1 is the best); trial 4 carries a `.nemo` that declares a behaviour.
VALUES = [0.30, 0.20, 0.50, 0.60, 0.70]
BEST = 1
TEST_WER = 0.25  # the best trial's test figure
TERSE = {"on": "<|spltoken0|>", "off": "<|spltoken1|>", "field": "terse", "default": False}


@pytest.fixture(scope="module")
def sweep_project(tmp_path_factory, retention_data, tiny_nemo) -> Path:
    """A finished sweep's records, without training: its stores (SQLite) and every trial's kept `.nemo`."""
    root = tmp_path_factory.mktemp("registry")
    (root / "sweeps").mkdir()
    (root / "search_spaces").mkdir()
    (root / "search_spaces" / "test.yaml").write_text(yaml.safe_dump(SEARCH_SPACE))
    data = {"train": retention_data, "validation": retention_data, "test": retention_data}
    write_spec(root, SWEEP, spec_dict(data, full=True))
    with in_project(root):
        spec = load_spec(SWEEP)
        space = load_space(spec)
        stores = open_sweep_stores(spec, space, params={"model": spec.model}, tags={})
        for value in VALUES:
            trial = stores.study.ask(space)
            run_id = stores.tracker.child_run(
                stores.parent_run, name=run_name(trial.number), role=TRIAL_ROLE, params=dict(trial.params), tags={}
            )
            TrialRecord.write(trial, mlflow_run_id=run_id, seed=trial.number, final={"val_wer": value, "val_bleu": 0.1})
            stores.study.tell(trial, value)
            stores.tracker.end_run(run_id, "FINISHED")
            model = TrialDir.of(spec, trial.number).model
            model.parent.mkdir(parents=True)
            if trial.number == len(VALUES) - 1:
                _with_terse(tiny_nemo, model)
            else:
                shutil.copyfile(tiny_nemo, model)
        stores.study.set_user_attr(TEST_ATTR, {"trial": BEST, "metrics": {"test_wer": TEST_WER, "test_bleu": 0.2}})
        interval = {"delta": -0.083, "low": -0.110, "high": -0.057}  # as the sweep logs it (`log_intervals`)
        stores.tracker.log_metrics(stores.parent_run, {f"ci_test_wer_vs_baseline_{k}": v for k, v in interval.items()})
        stores.tracker.end_run(stores.parent_run, "FINISHED")
    return root


@pytest.fixture
def spec(sweep_project, monkeypatch) -> SweepSpec:
    monkeypatch.chdir(sweep_project)
    for key in (*ENV_KEYS, "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(key, raising=False)
    return load_spec(SWEEP)


def _with_terse(source: Path, target: Path) -> Path:
    """A copy of `source` whose config declares the behaviour `terse` (as a fine-tuned checkpoint's does)."""
    with tarfile.open(source) as old, tarfile.open(target, "w") as new:
        for member in old.getmembers():
            if member.name.removeprefix("./") == "model_config.yaml":
                extracted = old.extractfile(member)
                assert extracted is not None
                config = OmegaConf.create(extracted.read().decode())
                assert isinstance(config, DictConfig)
                config[CONFIG_KEY] = {"terse": TERSE}
                data = OmegaConf.to_yaml(config).encode()
                member.size = len(data)
                new.addfile(member, io.BytesIO(data))
            else:
                new.addfile(member, old.extractfile(member) if member.isfile() else None)
    return target


def _client(spec: SweepSpec) -> MlflowClient:
    return MlflowClient(tracking_uri=spec.tracking_uri, registry_uri=spec.tracking_uri)


def _retention_lines(retention_data: Path, count: int) -> list[dict]:
    return [json.loads(line) for line in retention_data.read_text().splitlines()[:count]]


def test_export_register_makes_the_champion_a_pyfunc_that_transcribes_like_harness_transcribe(
    spec, retention_data, tiny_nemo, monkeypatch, capsys
):
    assert main(["export", SWEEP, "--register", "canary-demo"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"Registered {run_name(BEST)} as models:/canary-demo/1" in out
    assert "Version 1 of canary-demo is the champion: canary-demo had none." in out

    client = _client(spec)
    version = client.get_model_version_by_alias("canary-demo", CHAMPION)
    assert str(version.version) == "1"
    study = load_study(spec)
    best = next(t for t in study.trials if t.number == BEST)
    tags = version.tags
    assert tags[SWEEP_TAG] == SWEEP and tags[TRIAL_TAG] == str(BEST)
    assert tags[TRIAL_RUN_TAG] == TrialRecord.of(best).mlflow_run_id
    assert tags[PARENT_TAG] == study.user_attrs[PARENT_ATTR]
    assert json.loads(tags[PARAMS_TAG]) == json.loads(json.dumps(best.params, sort_keys=True))
    assert tags[REPORT_TAG].endswith(f"reports/{SWEEP}/report.md")
    # The figure the champion rule compares: the objective's metric on the test set, and that manifest's digest.
    assert (tags[FIGURE_TAG], float(tags[FIGURE_VALUE_TAG])) == ("test_wer", TEST_WER)
    assert tags[DIGEST_TAG] == manifest_file("test", str(retention_data)).sha256[:DIGEST_CHARS]
    for text in (
        run_name(BEST),
        f"sweep `{SWEEP}`",
        "test_wer=0.2500",
        "val_wer=0.2000",
        "report.md",
        "test_wer_vs_baseline -0.083 [-0.110, -0.057]",
    ):
        assert text in version.description
    run = client.get_run(version.run_id)  # a registration run under the sweep's parent run
    assert run.data.tags["mlflow.parentRunId"] == study.user_attrs[PARENT_ATTR]
    assert run.data.tags["harness.role"] == "registration" and run.info.status == "FINISHED"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", spec.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/canary-demo@champion")
    lines = _retention_lines(retention_data, 4)
    audio = [line["audio_filepath"] for line in lines]
    texts = model.predict(audio)
    expected = transcribe_files(
        str(tiny_nemo), [Path(a) for a in audio], source_lang="en", target_lang=None, behaviours=[], pnc="yes"
    )
    assert texts == expected and all(texts), texts  # the twin's own domain: it says something for each
    # Languages as params, or per line from a DataFrame: the same decode as `harness transcribe --target-lang`.
    german = transcribe_files(
        str(tiny_nemo), [Path(a) for a in audio[:2]], source_lang="en", target_lang="de", behaviours=[], pnc="yes"
    )
    assert model.predict(audio[:2], params={"source_lang": "en", "target_lang": "de"}) == german
    # Lines decode in one batch per language pair, as `harness transcribe` would decode each pair's files.
    english = transcribe_files(
        str(tiny_nemo), [Path(a) for a in audio[2:]], source_lang="en", target_lang=None, behaviours=[], pnc="yes"
    )
    frame = pd.DataFrame({"audio_filepath": audio, "source_lang": ["en"] * 4, "target_lang": ["de", "de", "en", ""]})
    assert model.predict(frame) == german + english

    # Registering the same trial again adds nothing.
    assert main(["export", SWEEP, "--register", "canary-demo"]) == 0
    assert "is already version 1 of canary-demo; nothing registered" in " ".join(capsys.readouterr().out.split())
    assert len(client.search_model_versions("name='canary-demo'")) == 1


def _test_predictions(spec: SweepSpec, manifest: Path, wrong: bool) -> None:
    """The test run's predictions of `manifest`: every line exact, or every line mis-transcribed."""
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    path = TrialDir.of(spec, TEST_DIR).predictions
    path.parent.mkdir(parents=True, exist_ok=True)
    said = [Transcript(x["source_lang"], x["target_lang"], x["text"], "no" if wrong else x["text"]) for x in lines]
    write_predictions(path, said, with_behaviours=False)


def test_the_champion_moves_only_for_a_better_figure_on_the_same_test_manifest(spec, retention_data, tmp_path):
    study = load_study(spec)
    client = _client(spec)
    name = "canary-rule"

    def register(number: int, test_wer: float, wrong: bool = False):
        study.set_user_attr(TEST_ATTR, {"trial": number, "metrics": {"test_wer": test_wer}})
        _test_predictions(spec, Path(spec.data.test or ""), wrong)
        registration = register_model(spec, number, name)
        champion = str(client.get_model_version_by_alias(name, CHAMPION).version)
        decision = client.get_model_version(name, registration.version).tags[DECISION_TAG]
        return registration, champion, decision

    try:
        first, champion, _ = register(BEST, 0.25, wrong=True)
        assert (first.version, champion, first.champion) == ("1", "1", True)
        better, champion, decision = register(0, 0.20)
        assert (better.version, champion, better.champion) == ("2", "2", True)
        assert decision.startswith(
            "Version 2 is the champion of canary-rule: its test_wer 0.2000 beats version 1's 0.2500 on the same "
            "test manifest beyond the interval (-1.000 WER [-1.000, -1.000], 95%, "
        )
        # A better figure from the same predictions (a seed's luck, say): the interval includes 0, the champion stays.
        lucky, champion, decision = register(3, 0.15)
        assert (lucky.version, champion, lucky.champion) == ("3", "2", False)
        assert "version 3's test_wer 0.1500 beats its 0.2000 on the same test manifest, but not beyond the " in decision
        assert "+0.000 WER [0.000, 0.000] (includes 0: not separable)" in decision
        worse, champion, decision = register(2, 0.40)
        assert (worse.version, champion, worse.champion) == ("4", "2", False)
        assert decision.startswith(
            "Version 2 stays the champion of canary-rule: version 4's test_wer 0.4000 does not beat its 0.2000 on "
            "the same test manifest (lower is better); to move it anyway: MlflowClient("
        )
        assert decision.endswith(".set_registered_model_alias('canary-rule', 'champion', '4').")
        # A far better figure on another test manifest (one line fewer) does not compare: the champion stays.
        other = tmp_path / "test-other.json"
        other.write_text("\n".join(retention_data.read_text().splitlines()[1:]) + "\n")
        spec.data.test = str(other)
        elsewhere, champion, decision = register(4, 0.01)
        assert (elsewhere.version, champion, elsewhere.champion) == ("5", "2", False)
        assert "version 5's test_wer was measured on another test manifest" in decision
        assert "so the figures do not compare" in decision
    finally:
        study.set_user_attr(TEST_ATTR, {"trial": BEST, "metrics": {"test_wer": TEST_WER, "test_bleu": 0.2}})


def test_a_declared_behaviour_is_a_pyfunc_param(spec, retention_data, monkeypatch):
    number = len(VALUES) - 1  # its `.nemo` declares `terse`
    registration = register_model(spec, number, "canary-terse")
    assert registration.figure is not None and registration.figure.name == "val_wer"  # never scored on the test set
    monkeypatch.setenv("MLFLOW_TRACKING_URI", spec.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/canary-terse@champion")
    assert "behaviours" in [p.name for p in model.metadata.get_params_schema().params]
    audio = [line["audio_filepath"] for line in _retention_lines(retention_data, 2)]
    nemo = str(TrialDir.of(spec, number).model)
    for state in ("on", "off"):
        expected = transcribe_files(
            nemo, [Path(a) for a in audio], source_lang="en", target_lang=None, behaviours=[f"terse={state}"], pnc="yes"
        )
        assert model.predict(audio, params={"behaviours": {"terse": state == "on"}}) == expected
    with pytest.raises(MlflowException, match="digits"):
        model.predict(audio, params={"behaviours": {"digits": True}})


def test_a_sweep_with_registry_name_registers_its_chosen_trial_at_its_end(spec: SweepSpec) -> None:
    lines: list[str] = []
    assert register_best(spec, lines.append) is None and not lines  # no `registry:` in the spec
    spec.registry = RegistrySpec(name="canary-end")
    registration = register_best(spec, lines.append)
    assert registration is not None and registration.trial.number == BEST and registration.champion
    assert lines == [
        f"Registered {run_name(BEST)} as models:/canary-end/1 (run {registration.run_id}).\n"
        "Version 1 of canary-end is the champion: canary-end had none."
    ]


def test_a_failed_registration_at_a_sweep_end_is_a_warning_that_says_how_to_retry(spec: SweepSpec) -> None:
    TrialDir.of(spec, BEST).model.rename(TrialDir.of(spec, BEST).model.with_suffix(".away"))
    try:
        spec.registry = RegistrySpec(name="canary-missing")
        lines: list[str] = []
        assert register_best(spec, lines.append) is None
        assert len(lines) == 1 and "was not kept" in lines[0]
        assert f"retry with `harness export {SWEEP} --register canary-missing`" in lines[0]
    finally:
        TrialDir.of(spec, BEST).model.with_suffix(".away").rename(TrialDir.of(spec, BEST).model)


def test_export_needs_out_or_register_and_a_name_mlflow_takes(spec, capsys):
    assert main(["export", SWEEP]) == 2
    assert "needs `--out PATH` (a .nemo file or a folder), `--register NAME`, or both" in capsys.readouterr().out
    assert main(["export", SWEEP, "--register", "team/canary"]) == 2
    assert "`--register team/canary`: use letters, digits" in " ".join(capsys.readouterr().out.split())


def test_registry_in_the_spec_is_checked_on_load(project):
    data = {"train": "t.json", "validation": "v.json"}
    assert load_spec(write_spec(project, "plain", spec_dict(data))).registry is None

    def spec_with(name: str, registry: dict, keep: str = "best") -> SweepSpec:
        return load_spec(
            write_spec(project, name, spec_dict(data, registry=registry, training={"keep_checkpoints": keep}))
        )

    assert spec_with("named", {"name": "canary.demo-1"}).registry == RegistrySpec(name="canary.demo-1")
    with pytest.raises(SpecError, match=r"`registry\.name` is 'models:/x'; use letters, digits"):
        spec_with("colon", {"name": "models:/x"})
    with pytest.raises(SpecError, match=r"unknown key `registry\.alias` \(allowed here: name\)"):
        spec_with("alias", {"name": "x", "alias": "best"})
    with pytest.raises(SpecError, match=r"missing required key `registry\.name`"):
        spec_with("empty", {})
    with pytest.raises(SpecError, match=r"`training\.keep_checkpoints` is none: set it to best \(or all\)"):
        spec_with("unkept", {"name": "x"}, keep="none")


def _version(version: str, figure: Figure | None) -> ModelVersion:
    tags = figure.tags() if figure else {}
    return ModelVersion("m", version, 0, tags=[ModelVersionTag(key, value) for key, value in tags.items()])


def _gap(low: float, high: float) -> Interval:
    return Interval("wer", (low + high) / 2, low, high, resamples=1000, seed=0, lines=40)


@pytest.mark.parametrize(
    ("new", "held", "interval", "moves", "why"),
    [
        (0.1, None, None, True, "m had none"),
        (0.1, 0.2, _gap(-0.15, -0.05), True, "beats version 1's 0.2000 on the same test manifest beyond the interval"),
        (0.1, 0.2, _gap(-0.2, 0.01), False, "but not beyond the interval (-0.095 WER [-0.200, 0.010] (includes 0"),
        (0.1, 0.2, None, False, "there is no interval to say it is beyond noise"),
        (0.2, 0.2, _gap(-0.1, 0.1), False, "does not beat its 0.2000"),  # a tie keeps the champion
        (0.3, 0.2, _gap(0.05, 0.15), False, "does not beat its 0.2000"),
    ],
)
def test_the_champion_rule(new, held, interval, moves, why):
    figure = Figure("test_wer", new, Direction.MINIMIZE, "test.json", "abc")
    champion = None if held is None else _version("1", Figure("test_wer", held, Direction.MINIMIZE, "test.json", "abc"))
    move, note = champion_decision("m", "2", figure, champion, "sqlite:///x.db", interval)
    assert move is moves and why in note


def test_a_higher_is_better_figure_moves_the_champion_only_beyond_its_interval():
    held = _version("1", Figure("test_bleu", 0.40, Direction.MAXIMIZE, "test.json", "abc"))
    figure = Figure("test_bleu", 0.50, Direction.MAXIMIZE, "test.json", "abc")
    assert champion_decision("m", "2", figure, held, "u", _gap(0.02, 0.18))[0]
    assert not champion_decision("m", "2", figure, held, "u", _gap(-0.01, 0.2))[0]


def test_figures_that_do_not_compare_keep_the_champion():
    wer = Figure("test_wer", 0.1, Direction.MINIMIZE, "test.json", "abc")
    for held, why in [
        (Figure("val_wer", 0.5, Direction.MINIMIZE, "val.json", "def"), "judged by test_wer, the champion by val_wer"),
        (Figure("test_wer", 0.5, Direction.MINIMIZE, "old.json", "def"), "measured on another test manifest"),
        (None, "it records no figure to compare"),
    ]:
        move, note = champion_decision("m", "2", wer, _version("1", held), "sqlite:///x.db", _gap(-0.5, -0.3))
        assert not move and why in note and "set_registered_model_alias('m', 'champion', '2')" in note
    move, note = champion_decision("m", "2", None, _version("1", wer), "sqlite:///x.db", None)
    assert not move and "version 2 has no figure to compare" in note
