"""The `harness` command: bad arguments and bad input get one message and exit 2, before any work."""

import sys
import types

import numpy as np
import optuna
import pytest
import soundfile

from harness.cli import build_parser, main
from harness.devices import default_slots
from harness.spec import load_spec
from harness.sweep import Supervisor
from tests.conftest import spec_dict, write_spec


def _said(capsys) -> str:
    """What the command printed, with rich's line wrapping undone."""
    return " ".join(capsys.readouterr().out.split())


# `--workers -1` ran nothing and exited 0, `--workers 0` silently meant the default.
@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["sweep", "x", "--workers", "0"], "argument --workers: must be a whole number of at least 1, not 0"),
        (["sweep", "x", "--workers", "-1"], "argument --workers: must be a whole number of at least 1, not -1"),
        (["worker", "x", "--workers", "two"], "argument --workers: must be a whole number of at least 1, not 'two'"),
        (["sweep", "x", "--trials", "0"], "argument --trials: must be a whole number of at least 1, not 0"),
        (["reproduce", "x", "--trial", "-1"], "argument --trial: must be a trial number (0, 1, ...), not -1"),
        (["export", "x", "--trial", "-1", "--out", "m.nemo"], "argument --trial: must be a trial number (0, 1, ...)"),
    ],
)
def test_counts_must_be_positive_whole_numbers(argv, expected, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert f"harness {argv[0]}: error: {expected}" in capsys.readouterr().err


def test_valid_counts_parse():
    args = build_parser().parse_args(["sweep", "x", "--workers", "2", "--trials", "1"])
    assert (args.workers, args.trials) == (2, 1)
    assert build_parser().parse_args(["reproduce", "x", "--trial", "0"]).trial == 0


@pytest.fixture
def no_restore(monkeypatch):
    """Fail loudly, and fast, if `transcribe` gets as far as restoring the model (minutes of NeMo log)."""

    class EncDecMultiTaskModel:
        @staticmethod
        def restore_from(*args, **kwargs):
            raise AssertionError("the model was restored before its input was checked")

    stub = types.ModuleType("nemo.collections.asr.models")
    stub.EncDecMultiTaskModel = EncDecMultiTaskModel
    monkeypatch.setitem(sys.modules, "nemo.collections.asr.models", stub)


def _wav(path, *, channels: int = 1, rate: int = 16000):
    tone = 0.1 * np.sin(np.linspace(0, 440 * 2 * np.pi, rate))
    soundfile.write(path, np.stack([tone] * channels, axis=1) if channels > 1 else tone, rate)
    return path


@pytest.mark.parametrize(
    "case", ["missing audio", "not audio", "stereo", "not a .nemo", "junk .nemo", "directory", "language", "behaviour"]
)
def test_transcribe_refuses_bad_input_before_restoring(tmp_path, no_restore, capsys, case):
    model, audio, extra = "canary-tiny", _wav(tmp_path / "tone.wav"), []
    if case == "missing audio":
        audio = tmp_path / "gone.wav"
        expected = f"error: audio file {audio} does not exist."
    elif case == "not audio":
        audio = tmp_path / "notes.txt"
        audio.write_text("not audio")
        expected = f"error: audio file {audio} cannot be decoded ("
    elif case == "stereo":
        audio = _wav(tmp_path / "stereo.wav", channels=2)
        expected = f"error: audio file {audio} has 2 channels (the model takes mono); convert it, e.g. `sox {audio}"
    elif case in ("not a .nemo", "junk .nemo"):
        model = tmp_path / ("model.txt" if case == "not a .nemo" else "model.nemo")
        model.write_text("not a checkpoint")
        expected = f"error: Model {model} is not a .nemo checkpoint (not a tar archive); pass a .nemo file."
    elif case == "directory":
        model = tmp_path
        expected = f"error: Model {tmp_path} is a directory; pass a .nemo file (e.g. from `harness export`)."
    elif case == "language":
        extra = ["--source-lang", "fr"]
        expected = "error: --source-lang 'fr' is not a language of canary-tiny.nemo (it has de, en)."
    else:
        extra = ["--behaviour", "loud=on"]
        expected = "error: --behaviour loud: canary-tiny.nemo declares no behaviour 'loud' (it has: none)."
    assert main(["transcribe", str(model), str(audio), *extra]) == 2
    said = _said(capsys)
    assert said.startswith(expected), said
    assert "Traceback" not in said


def test_transcribe_lists_every_problem_at_once(tmp_path, no_restore, capsys):
    narrow, gone = _wav(tmp_path / "narrow.wav", rate=8000), tmp_path / "gone.wav"
    assert main(["transcribe", "canary-tiny", str(narrow), str(gone), "--target-lang", "xx"]) == 2
    assert _said(capsys) == " ".join(
        f"""error: Nothing was transcribed:
          audio file {narrow} has a sample rate of 8000 Hz (the model takes 16000 Hz); convert it, e.g.
          `sox {narrow} -r 16000 -c 1 {tmp_path / "narrow-mono-16000.wav"}`
          audio file {gone} does not exist
          --target-lang 'xx' is not a language of canary-tiny.nemo (it has de, en)""".split()
    )


def test_reproduce_unknown_trial_names_the_completed_trial_numbers(project, speech_data, capsys):
    # "(complete trials: 0)" read as "none"; the recorded trial must survive the mistake.
    name = write_spec(project, "done", spec_dict(speech_data))
    study = Supervisor(load_spec(name), slots=default_slots(1)).open().study
    lr = optuna.distributions.FloatDistribution(5e-4, 3e-3, log=True)
    study.add_trial(optuna.trial.create_trial(params={"lr": 1e-3}, distributions={"lr": lr}, value=0.5))
    capsys.readouterr()
    assert main(["reproduce", name, "--trial", "999"]) == 2
    assert "error: Trial 999 of sweep done did not complete (completed trial numbers: 0)." in _said(capsys)
    (kept,) = study.get_trials(deepcopy=False)
    assert (kept.number, kept.state, kept.value) == (0, optuna.trial.TrialState.COMPLETE, 0.5)
