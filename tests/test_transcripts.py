"""Validation transcripts: NeMo's own validation decode gives every figure, once, with one definition."""

import json

import pytest

from harness.canary import inspect_checkpoint, trial_config
from harness.evaluation import score
from harness.manifest import manifest_lines
from harness.spec import BudgetSpec, DataSpec, TrainingSpec
from harness.training import build_trainer, restore_model
from harness.transcripts import ValidationTranscripts


@pytest.fixture(scope="module")
def validated(tiny_nemo, speech_data, tmp_path_factory):
    """canary-tiny validated twice by a Trainer that records its transcripts."""
    info = inspect_checkpoint(tiny_nemo)
    data = DataSpec(train=str(speech_data["train"]), validation=str(speech_data["validation"]))
    training = TrainingSpec(accelerator="cpu", validation_batch_size=4)
    cfg = trial_config(info.config, {}, data=data, training=training, budget=BudgetSpec(max_steps=10), seed=0)
    transcripts = ValidationTranscripts()
    trainer = build_trainer(training, max_steps=1, val_check_interval=1, callbacks=[transcripts])
    model = restore_model(tiny_nemo, cfg, trainer)
    decoded = []
    for _ in range(2):
        trainer.validate(model, verbose=False)
        decoded.append(list(transcripts.transcripts))
    path = transcripts.write(tmp_path_factory.mktemp("predictions") / "predictions.jsonl")
    return model, decoded, transcripts.figures, path


def test_every_validation_line_is_decoded_once_per_validation(validated, speech_data):
    _, decoded, _, _ = validated
    entries = manifest_lines(speech_data["validation"])
    for run in decoded:  # the second validation starts afresh
        assert [t.reference for t in run] == [e["text"] for e in entries]
        assert [t.pair for t in run] == [f"{e['source_lang']}-{e['target_lang']}" for e in entries]


def test_hypotheses_are_those_of_a_plain_transcribe(validated, speech_data):
    model, decoded, _, _ = validated
    plain = model.transcribe(str(speech_data["validation"]), batch_size=4, verbose=False)
    assert [t.hypothesis for t in decoded[-1]] == [h.text for h in plain]


def test_published_figures_are_the_harness_scores_and_agree_per_pair(validated):
    _, decoded, metrics, _ = validated
    expected = {f"val_{k}": v for k, v in score(decoded[-1]).items()}
    assert {"val_wer", "val_wer_normalized", "val_bleu", "val_wer/en-en", "val_bleu/en-de"} <= set(expected)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-6), key
    # One translation pair: the overall BLEU is that pair's BLEU (NeMo's unsmoothed BLEU is gone).
    assert metrics["val_bleu"] == pytest.approx(metrics["val_bleu/en-de"], abs=1e-6)
    assert metrics["val_wer"] == pytest.approx(metrics["val_wer/en-en"], abs=1e-6)


def test_predictions_file_holds_each_line(validated):
    _, decoded, _, path = validated
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["pair"], r["reference"], r["hypothesis"]) for r in rows] == [
        (t.pair, t.reference, t.hypothesis) for t in decoded[-1]
    ]
