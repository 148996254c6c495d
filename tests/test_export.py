"""`harness export`: the best trial's fine-tuned checkpoint leaves the sweep as a usable `.nemo`.

Uses conftest's `report_sweep`, shared with test_report.py and test_sweep.py (run once per session,
whichever module comes first).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import UsageError
from harness.export import export_model
from harness.model_source import resolve_model
from harness.tracking import run_name
from harness.trial_dir import TrialDir
from tests.conftest import SWEEP, spec_dict, write_spec
from tests.helpers import load_study, sha256


@pytest.fixture
def spec(report_sweep, monkeypatch):
    return report_sweep.enter(monkeypatch)


def test_exported_best_model_restores_and_transcribes(spec, tmp_path):
    from nemo.collections.asr.models import EncDecMultiTaskModel

    out = tmp_path / "model.nemo"
    assert main(["export", SWEEP, "--out", str(out)]) == 0
    best = load_study(spec).best_trial
    kept = TrialDir.of(spec, best.number).model
    assert sha256(out) == sha256(kept)  # the best trial's fine-tuned weights ...
    assert sha256(out) != sha256(resolve_model(spec.model))  # ... not the pretrained checkpoint

    model = EncDecMultiTaskModel.restore_from(str(out), map_location="cpu").eval()
    first = json.loads(Path(spec.data.validation).read_text().splitlines()[0])
    hypotheses = model.transcribe(
        [first["audio_filepath"]],
        batch_size=1,
        verbose=False,
        source_lang=first["source_lang"],
        target_lang=first["target_lang"],
    )
    assert len(hypotheses) == 1
    text = hypotheses[0].text if hasattr(hypotheses[0], "text") else hypotheses[0]
    assert isinstance(text, str)


def test_export_of_a_trial_whose_checkpoint_was_not_kept_says_how_to_keep_it(spec, tmp_path, capsys):
    study = load_study(spec)
    others = [t.number for t in study.trials if t.number != study.best_trial.number]
    with pytest.raises(UsageError, match=r"training\.keep_checkpoints: all"):
        export_model(spec, others[0], tmp_path / "other.nemo")
    assert not (tmp_path / "other.nemo").exists()
    # The CLI prints it as one line and exits non-zero, no traceback.
    assert main(["export", SWEEP, "--trial", str(others[0]), "--out", str(tmp_path / "other.nemo")]) == 2
    assert "keep_checkpoints" in capsys.readouterr().out


def test_export_of_an_unknown_trial_names_the_valid_ones(spec, tmp_path):
    with pytest.raises(UsageError, match=r"no trial 99 .*trials 0\.\.\d+"):
        export_model(spec, 99, tmp_path / "x.nemo")


def test_export_into_a_directory_names_the_file_after_sweep_and_trial(spec, tmp_path):
    best = load_study(spec).best_trial
    trial, path = export_model(spec, best.number, tmp_path)
    assert trial.number == best.number
    assert path == tmp_path / f"{SWEEP}-{run_name(best.number)}.nemo" and path.is_file()


@pytest.mark.parametrize("below", ["model.nemo", "more/model.nemo"])
def test_an_out_path_through_a_file_is_one_line(project, capsys, below):
    """`--out notes.txt/model.nemo` ended in mkdir's FileExistsError (NotADirectoryError one level deeper), as a
    traceback; it is refused before the study is read, so no sweep is needed here."""
    name = write_spec(project, "exported", spec_dict({"train": "t.json", "validation": "v.json"}))
    (project / "notes.txt").write_text("not a folder")
    out = Path("notes.txt") / below
    assert main(["export", name, "--out", str(out)]) == 2
    assert " ".join(capsys.readouterr().out.split()) == (
        f"error: Cannot write `--out {out}`: notes.txt is a file, not a folder; choose another path, or move the "
        "file away."
    )
    assert (project / "notes.txt").read_text() == "not a folder"
