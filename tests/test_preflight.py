"""Preflight: bad input gets one clear error naming file:line and the fix; nothing trains."""

from dataclasses import replace

import pytest

from harness.canary import inspect_checkpoint
from harness.errors import HarnessError
from harness.preflight import check_manifest
from harness.spec import load_spec
from harness.sweep import Supervisor
from tests.conftest import copy_manifest, spec_dict, write_spec


def _supervise(project, data, **overrides):
    """Build a supervisor (runs preflight) and return the error it raises."""
    name = write_spec(project, "pre", spec_dict(data, **overrides))
    with pytest.raises(HarnessError) as caught:
        Supervisor(load_spec(name))
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
