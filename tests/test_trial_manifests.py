"""The manifests trial processes read: every scored line numbered, the zero-shot baseline's copies without tokens."""

import json
from pathlib import Path

from harness.behaviours import ORIGINAL_SOURCE_LANG
from harness.spec import load_spec
from harness.trial_manifests import LINE_FIELD, trial_data, write_trial_manifests
from tests.conftest import spec_dict, write_spec

TERSE = {"terse": {"on": "<|spltoken0|>", "off": "<|spltoken1|>", "field": "terse"}}


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def test_scored_lines_carry_their_number_and_an_absolute_audio_path(project, shared_clips, retention_data):
    data = {"train": shared_clips, "validation": shared_clips, "test": shared_clips, "retention": retention_data}
    spec = load_spec(write_spec(project, "plain", spec_dict(data, full=True)))
    copies = write_trial_manifests(spec)
    assert copies == trial_data(spec, baseline=True)  # no behaviours: the baseline and the trials read one set
    assert copies.train == spec.data.train  # nothing is scored on the training lines: no copy
    for user, copy in [(shared_clips, copies.validation), (shared_clips, copies.test)] + [
        (retention_data, copies.retention[0])
    ]:
        original, numbered = _lines(user), _lines(copy)
        assert [line.pop(LINE_FIELD) for line in numbered] == list(range(len(original)))
        for before, after in zip(original, numbered, strict=True):
            audio = Path(after.pop("audio_filepath"))
            assert audio.is_absolute() and audio == Path(before.pop("audio_filepath")).resolve()
            assert after == before


def test_the_baseline_reads_no_behaviour_tokens_and_the_trials_do(project, terse_data):
    spec = load_spec(write_spec(project, "terse", spec_dict(terse_data, behaviours=TERSE)))
    trials = write_trial_manifests(spec)
    released = trial_data(spec, baseline=True)
    assert trials.validation != released.validation and trials.train != spec.data.train
    plain, prompted = _lines(released.validation), _lines(trials.validation)
    assert {line["source_lang"] for line in plain} == {"en"} and not any(ORIGINAL_SOURCE_LANG in line for line in plain)
    assert {line["source_lang"] for line in prompted} == {"<|en|><|spltoken0|>", "<|en|><|spltoken1|>"}
    assert [line[LINE_FIELD] for line in plain] == [line[LINE_FIELD] for line in prompted] == list(range(len(plain)))
