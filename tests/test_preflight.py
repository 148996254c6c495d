"""Preflight: bad input gets one clear error naming file:line and the fix; nothing trains."""

import json
from dataclasses import replace

import numpy as np
import pytest
import soundfile

from harness.canary import inspect_checkpoint
from harness.errors import DataError
from harness.manifest import resolve_audio
from harness.preflight import check_manifest
from harness.spec import load_spec
from harness.sweep import Supervisor
from tests.conftest import copy_manifest, spec_dict, write_spec


def _supervise(project, data, /, **overrides):
    """Open a supervisor (runs preflight) and return the error it raises."""
    name = write_spec(project, "pre", spec_dict(data, **overrides))
    supervisor = Supervisor(load_spec(name))  # constructing checks nothing and creates nothing
    assert not (project / "mlruns").exists()
    with pytest.raises(DataError) as caught:
        supervisor.open()
    assert not (project / "mlruns").exists(), "preflight must fail before any database or trial exists"
    return str(caught.value)


def test_missing_manifest(project, speech_data):
    message = _supervise(project, {**speech_data, "train": project / "nope.json"})
    assert f"{project / 'nope.json'}: manifest does not exist; set `data.train`" in message


def test_line_that_is_not_json(project, speech_data):
    bad = copy_manifest(speech_data["train"], project / "train.json", lambda i, e: "{not json" if i == 2 else e)
    message = _supervise(project, {**speech_data, "train": bad})
    assert f"{bad}:3: not valid JSON" in message
    assert "nothing was trained" in message


def test_missing_audio_and_bad_duration(project, speech_data):
    def edit(i, entry):
        if i == 0:
            entry["audio_filepath"] = str(project / "gone.wav")
        if i == 1:
            entry["duration"] = 0
        return entry

    bad = copy_manifest(speech_data["validation"], project / "val.json", edit)
    message = _supervise(project, {**speech_data, "validation": bad})
    assert f"{bad}:1: audio file {project / 'gone.wav'} does not exist" in message
    assert f"{bad}:2: `duration` must be a positive number" in message
    assert "Preflight found 2 problem(s)" in message


def test_undecodable_audio(project, speech_data):
    junk = project / "junk.wav"
    junk.write_bytes(b"this is not audio")
    bad = copy_manifest(
        speech_data["validation"],
        project / "val.json",
        lambda i, e: {**e, "audio_filepath": str(junk)} if i == 0 else e,
    )
    assert f"{bad}:1: audio file {junk} cannot be decoded" in _supervise(project, {**speech_data, "validation": bad})


def test_unknown_language(project, speech_data):
    bad = copy_manifest(
        speech_data["train"], project / "train.json", lambda i, e: {**e, "target_lang": "xx"} if i == 4 else e
    )
    message = _supervise(project, {**speech_data, "train": bad})
    assert f"{bad}:5: `target_lang` is 'xx', which the model's tokenizer does not cover (it has de, en)" in message


def test_wrong_text_field_suggests_the_right_one(project, speech_data):
    def rename(i, entry):
        entry["answer"] = entry.pop("text")
        return entry

    bad = copy_manifest(speech_data["train"], project / "train.json", rename)
    message = _supervise(project, {**speech_data, "train": bad})
    assert f"{bad}:1: no `text` field; it has `answer`: set `data.text_field: answer`" in message


def test_all_empty_transcripts(project, speech_data):
    bad = copy_manifest(speech_data["train"], project / "train.json", lambda i, e: {**e, "text": ""})
    assert f"{bad}: every `text` is empty" in _supervise(project, {**speech_data, "train": bad})


def test_validation_without_translation_samples_cannot_give_bleu(project, speech_data):
    asr_only = copy_manifest(
        speech_data["validation"], project / "val.json", lambda i, e: e if e["target_lang"] == "en" else ""
    )
    message = _supervise(project, {**speech_data, "validation": asr_only}, objective={"metric": "bleu"})
    assert "no translation samples, so the objective `bleu` cannot be computed" in message


def test_budget_that_never_validates_at_the_end(project, speech_data):
    message = _supervise(project, speech_data, budget={"max_steps": 25, "val_check_interval": 10})
    assert "`budget.max_steps` must be a multiple of `budget.val_check_interval`" in message


def test_canary_v1_prompt_requires_taskname_and_pnc(project, speech_data, tiny_nemo):
    info = inspect_checkpoint(tiny_nemo)
    assert info.prompt_format == "canary2" and info.tokenizer_kind == "aggregate"
    stripped = copy_manifest(
        speech_data["train"],
        project / "train.json",
        lambda i, e: {k: v for k, v in e.items() if k not in ("taskname", "pnc")},
    )
    spec = load_spec(write_spec(project, "v1", spec_dict({**speech_data, "train": stripped})))
    _, canary2_problems = check_manifest(stripped, spec, info, split="train")
    assert canary2_problems == []  # canary2 has defaults for both
    _, v1_problems = check_manifest(stripped, spec, replace(info, prompt_format="canary"), split="train")
    assert f"{stripped}:1: missing `taskname` (asr or ast), required by the canary prompt format" in [
        str(p) for p in v1_problems
    ]
    assert f"{stripped}:1: missing `pnc`, required by the canary prompt format" in [str(p) for p in v1_problems]


def _audio_variant(project, manifest, name: str, *, channels: int = 1, rate: int | None = None):
    """A copy of the manifest's first audio file, as stereo and/or relabelled to another sample rate."""
    first = json.loads(manifest.read_text().splitlines()[0])
    samples, native = soundfile.read(resolve_audio(manifest, first["audio_filepath"]))
    path = project / name
    soundfile.write(path, np.stack([samples] * channels, axis=1) if channels > 1 else samples, rate or native)
    return path


def _first_entry(**changes):
    """A `copy_manifest` edit that changes the first entry only."""
    return lambda i, entry: {**entry, **changes} if i == 0 else entry


# One line each, naming file:line and the fix, before any database exists. Each of these
# passed preflight and then failed every trial (or trained on garbage) before.
BAD_VALUES = {
    "nan": "{bad}:1: `duration` is NaN; write the audio's length in seconds (e.g. from `soxi -D FILE`)",
    "inf": "{bad}:1: `duration` is infinite; write the audio's length in seconds (e.g. from `soxi -D FILE`)",
    "stereo": "{bad}:1: audio file {audio} has 2 channels (the model takes mono); "
    "convert it, e.g. `sox {audio} -r 16000 -c 1 {fixed}`",
    "8khz": "{bad}:1: audio file {audio} has a sample rate of 8000 Hz (the model takes 16000 Hz); "
    "convert it, e.g. `sox {audio} -r 16000 -c 1 {fixed}`",
    "latin1": "{bad}:2: not UTF-8 text (byte 0xe9 at column {column}); save the manifest as UTF-8 "
    "(for Latin-1 text: `iconv -f latin1 -t utf-8 {bad} > fixed.json`)",
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_manifest_values_are_named_at_file_and_line(project, speech_data, case):
    source = speech_data["validation"]
    audio = fixed = column = None
    edit = None
    if case in ("nan", "inf"):
        edit = _first_entry(duration=float(case))  # json.dumps writes NaN / Infinity, which json.loads reads
    elif case in ("stereo", "8khz"):
        channels, rate = (2, None) if case == "stereo" else (1, 8000)
        audio = _audio_variant(project, source, f"{case}.wav", channels=channels, rate=rate)
        fixed = audio.with_name(f"{case}-mono-16000.wav")
        edit = _first_entry(audio_filepath=str(audio))
    bad = copy_manifest(source, project / "val.json", edit)
    if case == "latin1":
        lines = bad.read_bytes().split(b"\n")
        lines[1] = lines[1].replace(b'"text": "', b'"text": "caf\xe9 ', 1)
        column = lines[1].index(b"\xe9") + 1
        bad.write_bytes(b"\n".join(lines))
    message = _supervise(project, {**speech_data, "validation": bad})
    assert BAD_VALUES[case].format(bad=bad, audio=audio, fixed=fixed, column=column) in message
    assert "Preflight found 1 problem(s); nothing was trained" in message


@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_gpu_accelerator_without_a_gpu(project, speech_data, monkeypatch, accelerator):
    monkeypatch.setattr("harness.devices.visible_gpus", lambda: 0)
    message = _supervise(project, speech_data, training={"accelerator": accelerator})
    assert (
        f"sweeps/pre.yaml: `training.accelerator` is {accelerator}, but no GPU is visible on this machine "
        "(torch sees no CUDA device); set `training.accelerator: auto` (the GPU where there is one, else the CPU) "
        "or `cpu`"
    ) in message


def test_retention_manifests_are_checked_like_the_others(project, speech_data, retention_data):
    gone = project / "old-domain.json"
    message = _supervise(project, speech_data, data={"retention": [str(retention_data), str(gone)]})
    assert f"{gone}: manifest does not exist; set `data.retention[1]` in sweeps/pre.yaml to a NeMo manifest" in message
    bad = copy_manifest(retention_data, project / "retention.json", _first_entry(duration=0))
    message = _supervise(project, speech_data, data={"retention": str(bad)})
    assert f"{bad}:1: `duration` must be a positive number" in message and "1 problem(s)" in message


def test_a_retention_limit_needs_asr_lines_in_the_retention_set(project, speech_data, retention_data):
    translations = copy_manifest(
        retention_data, project / "retention.json", lambda i, e: e if e["target_lang"] == "de" else ""
    )
    message = _supervise(
        project,
        speech_data,
        data={"retention": [str(translations)]},
        budget={"baseline": True},
        objective={"retention_max_wer_increase": 0.05},
    )
    assert (
        f"{translations}: no ASR (source_lang == target_lang) lines in `data.retention`, so the retention WER that "
        "`objective.retention_max_wer_increase` limits cannot be computed"
    ) in message


def _actual_seconds(manifest, index: int = 0) -> float:
    """The real length of a manifest line's audio, read from the file."""
    entry = json.loads(manifest.read_text().splitlines()[index])
    return soundfile.info(str(resolve_audio(manifest, entry["audio_filepath"]))).duration


def test_a_duration_half_the_audio_is_refused(project, speech_data):
    """A line whose `duration` is 50% short passed before (only a longer one was refused): NeMo then cuts the
    utterance to that length wherever a line has an offset, and trains on half a sentence against its whole text."""
    source = speech_data["validation"]
    actual = _actual_seconds(source)
    bad = copy_manifest(source, project / "val.json", _first_entry(duration=round(actual / 2, 4)))
    message = _supervise(project, {**speech_data, "validation": bad})
    assert (
        f"{bad}:1: `duration` {actual / 2:.2f}s is {actual / 2:.2f}s shorter than the audio ({actual:.2f}s), "
        "beyond the 0.10s tolerance (0.1s or 1% of the audio, whichever is larger, at most 0.5s): write the audio's "
        "length in seconds (e.g. from `soxi -D FILE`), or point the line at its own audio file"
    ) in message
    assert "Preflight found 1 problem(s); nothing was trained" in message


# (edit of the first line given its audio's real length, expected problem or None). The demo clips are 1-4 s,
# so the tolerance is the absolute 0.1 s.
DURATIONS = {
    "rounded to 2 decimals": (lambda s: {"duration": round(s, 2)}, None),
    "a decoder's 80 ms short": (lambda s: {"duration": s - 0.08}, None),
    "a decoder's 80 ms long": (lambda s: {"duration": s + 0.08}, None),
    "0.2 s short": (lambda s: {"duration": s - 0.2}, "0.20s shorter than the audio"),
    "0.2 s long (passed before)": (lambda s: {"duration": s + 0.2}, "0.20s longer than the audio"),
    "twice as long": (lambda s: {"duration": 2 * s}, "longer than the audio"),
    "a segment inside the file": (lambda s: {"offset": 0.5, "duration": s - 0.6}, None),
    "a segment past the end": (lambda s: {"offset": 0.5, "duration": s}, "ends 0.50s past the end of the audio"),
    "a negative offset": (lambda s: {"offset": -1, "duration": s}, "`offset` must be a number of seconds >= 0"),
}


@pytest.mark.parametrize("case", list(DURATIONS))
def test_duration_must_match_the_audio_within_the_tolerance(project, speech_data, tiny_nemo, case):
    """Both directions are checked against the file's real length, with an `offset` the segment's end."""
    source = speech_data["train"]
    edit, expected = DURATIONS[case]
    bad = copy_manifest(source, project / "train.json", _first_entry(**edit(_actual_seconds(source))))
    spec = load_spec(write_spec(project, "durations", spec_dict({**speech_data, "train": bad})))
    _, problems = check_manifest(bad, spec, inspect_checkpoint(tiny_nemo), split="train")
    found = [str(p) for p in problems]
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and found[0].startswith(f"{bad}:1: ") and expected in found[0], found


def test_the_tolerance_grows_with_long_audio():
    """0.1 s on short clips, 1% of a 30 s clip (0.3 s), never more than Lhotse's 0.5 s: a line with a
    `sampling_rate` off by more fails in every trial."""
    from harness.preflight import duration_mismatch, duration_tolerance

    assert duration_tolerance(2.0) == pytest.approx(0.1)
    assert duration_tolerance(30.0) == pytest.approx(0.3)
    assert duration_tolerance(120.0) == pytest.approx(0.5)
    assert duration_mismatch(29.75, None, 30.0) is None
    assert "0.40s shorter than the audio (30.00s), beyond the 0.30s tolerance" in str(
        duration_mismatch(29.6, None, 30.0)
    )
