"""Shared fixtures: real synthetic speech, the packaged canary-tiny twin, a project dir per test, one shared sweep.

Plain helpers (an `mlflow server`, waits, study access) live in tests/helpers.py; test modules
import from here and from there, never from each other.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from harness.manifest import manifest_lines
from harness.model_source import packaged_model
from harness.spec import SweepSpec, load_spec
from harness.speech import DEMO_RATES, DEMO_VOICES, build_corpus, build_retention_data
from tests.helpers import ENV_KEYS, in_project, mlflow_server

REPO = Path(__file__).resolve().parent.parent
# One thread per trial process: canary-tiny trains as fast on one core as on two, and `make test` runs two
# pytest workers side by side (pytest-xdist) on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
TEST_SPLITS = {"train": 48, "validation": 12, "test": 8}
RETENTION_TEST_LINES = 12  # the demo's retention set has 48; a few decode in a second


@pytest.fixture(scope="session")
def speech_data(tmp_path_factory) -> dict[str, Path]:
    """A small demo-domain corpus (espeak-ng voices unseen in pretraining, ~30% en->de)."""
    out = tmp_path_factory.mktemp("speech")
    return build_corpus(
        "home", out, splits=TEST_SPLITS, voices=DEMO_VOICES, rates=DEMO_RATES, translate_fraction=0.3, seed=7
    )


@pytest.fixture(scope="session")
def retention_data(tmp_path_factory) -> Path:
    """The demo's retention set, shortened: canary-tiny's pretraining domain (`commands`, its voices)."""
    return build_retention_data(tmp_path_factory.mktemp("retention"), lines=RETENTION_TEST_LINES)


@pytest.fixture(scope="session")
def terse_data(tmp_path_factory) -> dict[str, Path]:
    """Like the demo data: half the lines say `terse: true` and carry the article-free text."""
    return build_corpus(
        "home",
        tmp_path_factory.mktemp("terse"),
        splits={"train": 48, "validation": 12},
        voices=DEMO_VOICES,
        rates=DEMO_RATES,
        translate_fraction=0.25,
        seed=11,
        terse_fraction=0.5,
    )


@pytest.fixture(scope="session")
def shared_clips(tmp_path_factory) -> Path:
    """A manifest in the layout of real Canary data, which NeMo gives colliding cut ids (it names a cut
    after its audio file's stem): each clip as an en->en line, and as an en->de line that either reads
    the same file or a same-named file (`validation-00001.wav`) in another folder. Nine lines: under 2
    DDP ranks and a validation batch size of 4, the last round has one cut, so Lhotse pads with a `_dup`."""
    out = tmp_path_factory.mktemp("shared-clips")
    # Same seed, voices and rates: the same sentences spoken alike, as ASR lines in one folder and AST in another.
    corpus = partial(build_corpus, splits={"validation": 5}, voices=DEMO_VOICES, rates=DEMO_RATES, seed=7)
    asr = manifest_lines(corpus("home", out / "asr", translate_fraction=0.0)["validation"])
    ast = manifest_lines(corpus("home", out / "ast", translate_fraction=1.0)["validation"])
    lines = []
    for index, line in enumerate(asr):
        lines.append(line)
        if index < len(ast) - 1:
            shared = index % 2 == 0
            lines.append({**ast[index], "audio_filepath": line["audio_filepath"]} if shared else ast[index])
    manifest = out / "shared.json"
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return manifest


@pytest.fixture(scope="session")
def tiny_nemo() -> Path:
    path = packaged_model("canary-tiny")
    assert path.is_file(), "harness/assets/canary-tiny.nemo is missing; run `make twin`"
    return path


def spec_dict(data: Mapping[str, Path | str], /, *, full: bool = False, **overrides) -> dict[str, Any]:
    """A short sweep spec over `data`; nested overrides merge one level deep.

    Only `full` sweeps evaluate the zero-shot baseline and score the best trial on the test
    manifest: the other tests skip those two extra processes to keep the suite fast. A `data=`
    override adds keys to `data` (e.g. `data={"retention": [path]}`).
    """
    spec: dict[str, Any] = {
        "model": "canary-tiny",
        "data": {k: str(v) for k, v in data.items() if full or k != "test"},
        "search_space": "search_spaces/test.yaml",
        "budget": {"trials": 3, "max_steps": 20, "val_check_interval": 10, "max_retries": 1, "baseline": full},
        "objective": {"metric": "wer"},
        "pruner": {"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
        "sampler": {"type": "tpe", "seed": 0},
        # Only full sweeps keep the best checkpoint (export, test set); the others skip saving it.
        "training": {"accelerator": "cpu", "validation_batch_size": 16, "keep_checkpoints": "best" if full else "none"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


SEARCH_SPACE = {
    "lr": {"type": "float", "low": 5e-4, "high": 3e-3, "log": True},
    "batch_duration": {"type": "categorical", "choices": [10, 20]},
    "freeze": {"type": "categorical", "choices": ["none", "encoder_bn_se"]},
    "use_loss_mask_for_prompt": {"type": "categorical", "choices": [True, False]},
}


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty project dir as CWD: sweeps/, search_spaces/ and mlruns/ live here."""
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "search_spaces").mkdir()
    (tmp_path / "search_spaces" / "test.yaml").write_text(yaml.safe_dump(SEARCH_SPACE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HARNESS_STORAGE", raising=False)
    monkeypatch.delenv("HARNESS_TRACKING_URI", raising=False)
    return tmp_path


def write_spec(project: Path, name: str, spec: dict) -> str:
    (project / "sweeps" / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    return name


def copy_manifest(src: Path, dst: Path, edit=None) -> Path:
    """Copy a manifest, optionally editing each entry (`edit(index, entry) -> entry | str`)."""
    lines = []
    for index, line in enumerate(src.read_text().splitlines()):
        entry = json.loads(line)
        new = edit(index, entry) if edit else entry
        lines.append(new if isinstance(new, str) else json.dumps(new))
    dst.write_text("\n".join(lines) + "\n")
    return dst


@pytest.fixture
def repo_file():
    """Files of the repo itself (shipped sweeps and search spaces)."""
    return lambda rel: REPO / rel


def copy_into(project: Path, rel: str) -> Path:
    dst = project / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / rel, dst)
    return dst


# -- the shared sweep: run once per session for test_report.py, test_sweep.py and test_export.py ---

SWEEP = "reported"
# Every trial of the shared sweep is feasible under it. WER has no ceiling (insertions): one of its 20-step
# fine-tunes hallucinated its way from 0.0 to 12.3 on the retention set.
RETENTION_LIMIT_KEPT = 1000.0


@dataclass
class SharedSweep:
    """A finished sweep's project dir and the MLflow server it logged to."""

    project: Path
    uri: str
    console: str  # what the supervisor printed, to a console that is not a terminal

    def enter(self, monkeypatch: pytest.MonkeyPatch) -> SweepSpec:
        """Make the project the CWD for one test and return its spec."""
        monkeypatch.chdir(self.project)
        for key in ENV_KEYS:
            monkeypatch.delenv(key, raising=False)
        return load_spec(SWEEP)


@pytest.fixture(scope="session")
def report_sweep(tmp_path_factory, speech_data, retention_data) -> Iterator[SharedSweep]:
    """The full sweep (baseline, 3 unpruned trials, test set, a retention set under a limit every trial
    keeps) that test_report.py, test_sweep.py and test_export.py all read, run once per session by
    whichever test asks first.

    It logs to a real `mlflow server` over HTTP, as a multi-host sweep would, so the REST API
    comparison and the artifact upload are tested on the path users take; the server stops when
    the session ends. A failed sweep fails every test that asks for it, without running it again.
    """
    from harness.sweep import Supervisor  # imports MLflow and Optuna (seconds): only where a sweep runs

    root = tmp_path_factory.mktemp("report-sweep")
    with mlflow_server(root / "server") as uri:
        project = root / "project"
        (project / "sweeps").mkdir(parents=True)
        (project / "search_spaces").mkdir()
        (project / "search_spaces" / "test.yaml").write_text(yaml.safe_dump(SEARCH_SPACE))
        # full: baseline and test set too; no pruning, so test_sweep.py can check every trial's whole record
        spec = spec_dict(
            speech_data,
            full=True,
            tracking={"uri": uri},
            pruner={"type": "none"},
            data={"retention": [str(retention_data)]},
            objective={"retention_max_wer_increase": RETENTION_LIMIT_KEPT},
        )
        (project / "sweeps" / f"{SWEEP}.yaml").write_text(yaml.safe_dump(spec))
        # System metrics every 2 s (not 10): test_sweep.py sees the monitor's own samples, not only the last one.
        out = io.StringIO()
        with in_project(project), pytest.MonkeyPatch.context() as env:
            env.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "2")
            Supervisor(load_spec(SWEEP), console=Console(file=out, width=200)).run()
        yield SharedSweep(project, uri, out.getvalue())


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`make test` runs `-n 2 --dist loadgroup`), tests that share an expensive fixture
    run on one worker, so it is built once: the shared sweep's tests, and each module with a module fixture.
    First among the hooks: xdist reads the `xdist_group` markers in its own hook (without `tryfirst` it ran
    before this one and the shared sweep was built on both workers, ~165 s twice)."""
    for item in items:
        definitions = item._fixtureinfo.name2fixturedefs
        if "report_sweep" in definitions:
            item.add_marker(pytest.mark.xdist_group("report_sweep"))
        elif any(defs[-1].scope == "module" for defs in definitions.values()):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
