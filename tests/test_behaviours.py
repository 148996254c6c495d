"""Custom behaviours: placeholder tokens reach NeMo's decoder prompt on every twin, preflight guards
them, and a fine-tuned canary-tiny switches its output by the token."""

import json
import re
from pathlib import Path

import pytest
import yaml

from harness.behaviours import ORIGINAL_SOURCE_LANG
from harness.canary import inspect_checkpoint, trial_config
from harness.errors import DataError
from harness.model_source import packaged_model
from harness.preflight import check_manifest, preflight
from harness.spec import BudgetSpec, TrainingSpec, load_spec
from harness.speech import DEMO_RATES, DEMO_VOICES, build_corpus
from harness.training import restore_model
from harness.trial_dir import TrialDir
from harness.trial_manifests import trial_data, write_trial_manifests
from tests.conftest import copy_manifest, spec_dict, write_spec

ON, OFF = "<|spltoken0|>", "<|spltoken1|>"
TERSE = {"terse": {"on": ON, "off": OFF, "field": "terse"}}


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def test_the_spec_reads_unquoted_on_and_off_keys(project, terse_data):
    # PyYAML (YAML 1.1) turns unquoted `on:` / `off:` into booleans; the spec still reads them.
    text = yaml.safe_dump(spec_dict(terse_data)) + f'behaviours:\n  terse: {{on: "{ON}", off: "{OFF}", field: terse}}\n'
    (project / "sweeps" / "yaml11.yaml").write_text(text)
    behaviour = load_spec("yaml11").behaviours["terse"]
    assert (behaviour.on, behaviour.off, behaviour.field, behaviour.default) == (ON, OFF, "terse", None)


def test_prompted_manifests_carry_the_token_after_the_source_language(project, terse_data):
    spec = load_spec(write_spec(project, "prompted", spec_dict(terse_data, behaviours=TERSE)))
    data = write_trial_manifests(spec)
    assert data == trial_data(spec) and data.train != spec.data.train
    for split in ("train", "validation"):
        original, prompted = _lines(getattr(spec.data, split)), _lines(getattr(data, split))
        assert len(prompted) == len(original)
        for before, after in zip(original, prompted, strict=True):
            assert after["source_lang"] == "<|en|>" + (ON if before["terse"] else OFF)
            assert after[ORIGINAL_SOURCE_LANG] == before["source_lang"] == "en"
            assert (after["text"], after["target_lang"]) == (before["text"], before["target_lang"])
            assert Path(after["audio_filepath"]).is_absolute() and Path(after["audio_filepath"]).is_file()
        assert {line["terse"] for line in original} == {True, False}
    # The demo behaviour is real: terse lines have no article, the others do.
    for line in _lines(spec.data.train):
        if line["target_lang"] == "en":
            assert (" the " in f" {line['text']} ") is not line["terse"], line


def test_retention_lines_without_the_field_take_the_default_else_off(project, terse_data, retention_data):
    """The old domain's lines carry no `terse` field: `off` is the model's old behaviour, and what a caller
    of the fine-tuned model would ask for there; a declared default wins. Training lines still need it."""
    with_field = copy_manifest(retention_data, project / "retention.json", _set_first(terse=True))
    retention = {"retention": [str(retention_data), str(with_field)]}
    spec = load_spec(write_spec(project, "keep", spec_dict(terse_data, data=retention, behaviours=TERSE)))
    preflight(spec, inspect_checkpoint(packaged_model("canary-tiny")))
    data = write_trial_manifests(spec)
    folder = spec.state_dir / "manifests" / "keep" / "prompted"
    assert data.retention == [str(folder / f"retention-{i}.json") for i in (0, 1)]
    plain, switched = _lines(data.retention[0]), _lines(data.retention[1])
    assert {line["source_lang"] for line in plain} == {"<|en|>" + OFF}
    assert [line["source_lang"] for line in switched[:2]] == ["<|en|>" + ON, "<|en|>" + OFF]
    assert [line["text"] for line in plain] == [line["text"] for line in _lines(retention_data)]

    on_by_default = {"terse": {**TERSE["terse"], "default": True}}
    spec = load_spec(write_spec(project, "keep", spec_dict(terse_data, data=retention, behaviours=on_by_default)))
    assert {line["source_lang"] for line in _lines(write_trial_manifests(spec).retention[0])} == {"<|en|>" + ON}
    assert not load_spec(write_spec(project, "bare", spec_dict(terse_data, data=retention))).behaviours
    assert trial_data(load_spec("bare")) == trial_data(load_spec("bare"), baseline=True)  # no behaviours: one set


def _set_first(**changes):
    return lambda i, entry: {**entry, **changes} if i == 0 else entry


def _preflight_error(project, terse_data, edit, behaviours):
    """Preflight of a sweep over an edited copy of the training manifest: (that copy, spec, the error)."""
    train = copy_manifest(terse_data["train"], project / "train.json", edit)
    data = {"train": train, "validation": terse_data["validation"]}
    spec = load_spec(write_spec(project, "bad", spec_dict(data, behaviours=behaviours)))
    with pytest.raises(DataError) as error:
        preflight(spec, inspect_checkpoint(packaged_model("canary-tiny")))
    return train, spec, str(error.value)


def test_preflight_names_every_bad_token_and_line_at_once(project, terse_data):
    def edit(index, entry):
        if index == 0:
            del entry["terse"]
        if index == 1:
            entry["terse"] = "maybe"
        return entry

    behaviours = {
        "terse": {"on": "<|en|>", "off": "<|spltoken999|>", "field": "terse"},
        "digits": {"on": ON, "off": ON, "field": "digits", "default": False},
    }
    train, _, message = _preflight_error(project, terse_data, edit, behaviours)
    assert "`behaviours.terse.on` is '<|en|>'; use a placeholder" in message
    assert "`behaviours.terse.off` is <|spltoken999|>, which the model's tokenizer does not have" in message
    assert "`behaviours.digits.off` reuses <|spltoken0|>" in message
    assert re.search(rf"{re.escape(str(train))}:1: missing `terse` \(custom behaviour `terse`\)", message)
    assert f"{train}:2: `terse` is 'maybe'; use true or false" in message
    assert "missing `digits`" not in message  # `digits` has a default: lines without the field are fine


def test_preflight_refuses_a_decoder_context_next_to_behaviour_tokens(project, terse_data):
    """A non-empty canary2 `decodercontext` would crash the aggregate tokenizer at the first batch."""

    def edit(index, entry):
        entry["decodercontext"] = {0: "open the gate", 1: ""}.get(index, "")  # empty: NeMo skips it
        return entry

    train, spec, message = _preflight_error(project, terse_data, edit, TERSE)
    assert "Preflight found 1 problem(s)" in message
    assert (
        f"{train}:1: `decodercontext` is set, which NeMo's canary2 aggregate tokenizer cannot combine with custom "
        "behaviours" in message
    )
    assert f'set it to "") or remove `behaviours` from {spec.source}' in message
    # The unified tokenizer (canary-1b-v2's kind) takes a context; without behaviours there is no token to trip on.
    assert check_manifest(train, spec, inspect_checkpoint(packaged_model("canary-tiny-v2")), split="train")[1] == []
    plain = load_spec(write_spec(project, "plain", spec_dict({"train": train, "validation": terse_data["validation"]})))
    assert check_manifest(train, plain, inspect_checkpoint(packaged_model("canary-tiny")), split="train")[1] == []


def test_nemo_really_breaks_on_a_context_before_a_behaviour_token(tiny_nemo):
    """Why the preflight refuses it (NeMo 3.0): if this stops failing, the refusal can go."""
    from nemo.collections.asr.models import EncDecMultiTaskModel

    model = EncDecMultiTaskModel.restore_from(str(tiny_nemo), map_location="cpu")
    slots = {"emotion": "<|emo:undefined|>", "target_lang": "en", "pnc": "yes", "itn": "no"}
    slots |= {"timestamp": "no", "diarize": "no"}

    def prompt(source_lang: str, context: str) -> list[str]:
        turn = {"role": "user", "slots": {**slots, "source_lang": source_lang, "decodercontext": context}}
        return model.tokenizer.ids_to_tokens(model.prompt.encode_dialog([turn])["context_ids"].tolist())

    assert ON in prompt(f"<|en|>{ON}", "")
    assert "<|en|>" in prompt("en", "open the gate")
    with pytest.raises(Exception, match="spltoken0"):
        prompt(f"<|en|>{ON}", "open the gate")


@pytest.mark.parametrize("twin", ["canary-tiny", "canary-tiny-v1", "canary-tiny-v2"])
def test_nemo_puts_the_switched_token_into_the_decoder_prompt(twin, project, terse_data):
    """The stock NeMo dataloader of every prompt format and tokenizer kind sees the token."""
    spec = load_spec(write_spec(project, "prompt", spec_dict(terse_data, model=twin, behaviours=TERSE)))
    info = inspect_checkpoint(packaged_model(twin))
    preflight(spec, info)
    cfg = trial_config(
        info.config,
        {"batch_duration": 30},
        data=write_trial_manifests(spec),
        training=TrainingSpec(accelerator="cpu"),
        budget=BudgetSpec(max_steps=10, val_check_interval=10),
        seed=0,
        behaviours=spec.behaviours,
    )
    assert cfg.harness_custom_tokens.terse.on == ON
    assert all("harness_source_lang" in m.constraint for m in cfg.multitask_metrics_cfg.metrics.values())
    model = restore_model(packaged_model(twin), cfg, trainer=None)
    on_id, off_id = (_token_id(model.tokenizer, token) for token in (ON, OFF))
    seen = set()
    for batch in (next(iter(model._train_dl)), next(iter(model._validation_dl))):
        for cut, prompt in zip(batch.cuts, batch.prompt, strict=True):
            ids = prompt.tolist()
            wanted, other = (on_id, off_id) if cut.custom["terse"] else (off_id, on_id)
            assert wanted in ids and other not in ids, (twin, cut.custom, ids)
            seen.add(cut.custom["terse"])
    assert seen == {True, False}


def _token_id(tokenizer, token: str) -> int:
    special = getattr(tokenizer, "special_tokens", None)
    return special[token] if isinstance(special, dict) and token in special else tokenizer.token_to_id(token)


# The behaviour is learnt in a short CPU fine-tune (about 30 s idle): every training line is switched
# (half on, half off) and the pretrained twin always said "the" (its commands all have an article).
# Measured: 300 steps with the encoder frozen give 7% vs 100% of outputs with "the"; 200 steps or a
# trainable encoder at 150 steps did not separate the two (42% vs 96%, 100% vs 100%).
# With full (bucketed) batches, 300 steps left the terse output at 18% articles on data seed 5 (0% on
# seed 6); 400 steps give 0% vs 100% on seed 5 and 3% vs 100% on seed 6 (48 validation lines).
LEARN = {"lines": 160, "steps": 400, "lr": 3e-3, "batch_duration": 15, "freeze": "encoder", "translate": 0.2}


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory):
    """One trial of a real sweep with the `terse` behaviour; returns (spec, model.nemo)."""
    import io

    from rich.console import Console

    from harness.devices import default_slots
    from harness.sweep import Supervisor

    root = tmp_path_factory.mktemp("learn")
    data = build_corpus(
        "home",
        root / "data",
        splits={"train": LEARN["lines"], "validation": 48},
        voices=DEMO_VOICES,
        rates=DEMO_RATES,
        translate_fraction=LEARN["translate"],
        seed=5,
        terse_fraction=0.5,
    )
    for folder in ("sweeps", "search_spaces"):
        (root / folder).mkdir()
    fixed = {
        "lr": {"type": "categorical", "choices": [LEARN["lr"]]},
        "batch_duration": {"type": "categorical", "choices": [LEARN["batch_duration"]]},
        "freeze": {"type": "categorical", "choices": [LEARN["freeze"]]},
        "use_loss_mask_for_prompt": {"type": "categorical", "choices": [True]},
    }
    (root / "search_spaces" / "fixed.yaml").write_text(yaml.safe_dump(fixed))
    raw = spec_dict(
        data,
        search_space="search_spaces/fixed.yaml",
        budget={"trials": 1, "max_steps": LEARN["steps"], "val_check_interval": LEARN["steps"]},
        training={"keep_checkpoints": "best"},
        behaviours=TERSE,
    )
    (root / "sweeps" / "learn.yaml").write_text(yaml.safe_dump(raw))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.delenv("HARNESS_STORAGE", raising=False)
        patch.delenv("HARNESS_TRACKING_URI", raising=False)
        spec = load_spec("learn")
        Supervisor(spec, console=Console(file=io.StringIO()), slots=default_slots(1)).run()
        yield spec, TrialDir.of(spec, 0).model


def _article_rate(texts) -> float:
    return sum(" the " in f" {getattr(t, 'text', t)} " for t in texts) / len(texts)


@pytest.mark.extended  # trains several trials: `make test-extended`
def test_fine_tuned_model_switches_its_output_by_the_token(fine_tuned):
    from nemo.collections.asr.models import EncDecMultiTaskModel

    from harness.behaviours import declared_behaviours, transcribe

    spec, nemo = fine_tuned
    model = EncDecMultiTaskModel.restore_from(str(nemo), map_location="cpu").eval()
    assert declared_behaviours(model.cfg) == spec.behaviours  # the checkpoint knows its behaviours
    audio = [line["audio_filepath"] for line in _lines(spec.data.validation) if line["target_lang"] == "en"]
    outputs = {
        state: transcribe(
            model, audio, source_lang="en", target_lang="en", behaviours={"terse": state}, pnc="no", verbose=False
        )
        for state in (True, False)
    }
    rates = {state: _article_rate(texts) for state, texts in outputs.items()}
    assert rates[False] >= 0.75 and rates[True] <= 0.25, rates


@pytest.mark.extended  # trains several trials: `make test-extended`
def test_metrics_are_named_by_the_original_language_pair_and_the_behaviour_state(fine_tuned):
    from mlflow.tracking import MlflowClient

    from harness.report import write_report

    spec, _ = fine_tuned
    client = MlflowClient(spec.tracking_uri)
    experiment = client.get_experiment_by_name(spec.experiment_name)
    (run,) = client.search_runs([experiment.experiment_id], "tags.mlflow.runName = 'trial-0000'")
    metrics = run.data.metrics
    assert {"final_val_wer/en-en", "final_val_bleu/en-de", "final_val_wer", "final_val_bleu"} <= set(metrics)
    assert not [name for name in metrics if "spltoken" in name or "<|" in name]
    assert 0 <= metrics["final_val_wer"] < 1  # NeMo's WER constraint still picks the ASR lines
    # Each behaviour state is scored on its own lines of the prompted validation manifest, at every validation.
    states = {"val_wer/terse_on", "val_wer/terse_off", "val_wer_normalized/terse_on", "val_bleu/terse_off"}
    assert states | {f"final_{name}" for name in states} <= set(metrics)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_wer/terse_on")] == [LEARN["steps"]]
    # The report reads them back (no baseline in this sweep: the best trial's own on/off figures).
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(spec.state_dir.parent)
        page = write_report(spec, html_report=False).markdown.read_text()
    on, off = metrics["final_val_wer/terse_on"], metrics["final_val_wer/terse_off"]
    assert f"`terse`: best trial on WER {on:.4f}, off WER {off:.4f}; no zero-shot baseline figures" in page


@pytest.mark.extended  # trains several trials: `make test-extended`
def test_transcribe_command_switches_the_behaviour(fine_tuned, capsys):
    from harness.cli import main

    spec, nemo = fine_tuned
    audio = [line["audio_filepath"] for line in _lines(spec.data.validation) if line["target_lang"] == "en"][:8]
    texts = {}
    for state in ("on", "off"):
        assert main(["transcribe", str(nemo), *audio, "--behaviour", f"terse={state}", "--pnc", "no"]) == 0
        rows = [line.split("\t") for line in capsys.readouterr().out.splitlines() if "\t" in line]
        assert [path for path, _ in rows] == audio
        texts[state] = [text for _, text in rows]
    assert _article_rate(texts["on"]) < _article_rate(texts["off"])
    assert main(["transcribe", str(nemo), audio[0], "--behaviour", "digits=on"]) == 2
    assert "declares no behaviour 'digits' (it has: terse)" in capsys.readouterr().out


V1 = ["<|startoftranscript|>", "<|en|>"]  # then task, target language, pnc
V2 = ["<|startofcontext|>", "<|startoftranscript|>", "<|emo:undefined|>", "<|en|>"]  # then target, pnc, ...


@pytest.mark.parametrize(
    ("twin", "target", "expected"),
    [
        ("canary-tiny-v1", "de", [*V1, "<|translate|>", "<|de|>", "<|nopnc|>"]),
        ("canary-tiny-v1", "en", [*V1, "<|transcribe|>", "<|en|>", "<|nopnc|>"]),
        ("canary-tiny", "de", [*V2, "<|de|>", "<|nopnc|>", "<|noitn|>", "<|notimestamp|>", "<|nodiarize|>"]),
    ],
)
def test_transcribe_command_prompts_the_task_the_languages_ask_for(twin, target, expected, tmp_path, monkeypatch):
    """The decoder prompt itself (not the twin's output text): canary (v1) names the task, canary2 does not."""
    import numpy as np
    import soundfile
    from nemo.collections.asr.models import EncDecMultiTaskModel

    from harness.cli import main

    prompts = []
    decode = EncDecMultiTaskModel._transcribe_forward

    def spy(self, *args, **kwargs):
        outputs = decode(self, *args, **kwargs)
        prompts.extend(self.tokenizer.ids_to_tokens(row.tolist()) for row in outputs["decoder_input_ids"])
        return outputs

    monkeypatch.setattr(EncDecMultiTaskModel, "_transcribe_forward", spy)
    wav = tmp_path / "tone.wav"
    soundfile.write(wav, 0.1 * np.sin(np.linspace(0, 440 * 2 * np.pi, 16000)), 16000)
    assert main(["transcribe", twin, str(wav), "--target-lang", target, "--pnc", "no"]) == 0
    assert prompts == [expected]
