"""Validation transcripts: NeMo's own validation decode gives every figure, once, with one definition."""

import json
from pathlib import Path

import jiwer
import pytest
import sacrebleu

from harness.canary import inspect_checkpoint, trial_config
from harness.manifest import manifest_lines
from harness.scoring import decode_manifest, score
from harness.spec import BudgetSpec, DataSpec, SweepSpec, TrainingSpec
from harness.training import build_trainer, restore_model
from harness.transcripts import ValidationTranscripts
from harness.trial_manifests import write_trial_manifests
from tests.helpers import in_project


@pytest.fixture(scope="module")
def validated(tiny_nemo, shared_clips, tmp_path_factory):
    """canary-tiny validated twice by a Trainer that records its transcripts, on lines that share clips
    and file names (NeMo gives them one cut id), read from the harness's numbered copies."""
    info = inspect_checkpoint(tiny_nemo)
    project = tmp_path_factory.mktemp("transcripts")
    spec = SweepSpec("shared", "canary-tiny", DataSpec(train=str(shared_clips), validation=str(shared_clips)), "")
    with in_project(project):
        data = write_trial_manifests(spec)
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


def test_every_validation_line_is_decoded_once_per_validation(validated, shared_clips):
    _, decoded, _, _ = validated
    entries = manifest_lines(shared_clips)
    assert len({Path(e["audio_filepath"]).stem for e in entries}) < len(entries)  # cut ids collide
    for run in decoded:  # the second validation starts afresh
        assert [t.reference for t in run] == [e["text"] for e in entries]
        assert [t.pair for t in run] == [f"{e['source_lang']}-{e['target_lang']}" for e in entries]


def test_hypotheses_are_those_of_a_plain_transcribe(validated, shared_clips):
    """`transcribe()` keeps manifest order (no bucketing, no shuffle): the test and retention sets pair
    hypotheses with lines by position (`evaluation.decode_manifest`), and validation must agree with it."""
    model, decoded, _, _ = validated
    plain = decode_manifest(model, shared_clips, "text")
    assert [t.hypothesis for t in decoded[-1]] == [t.hypothesis for t in plain]
    assert [(t.pair, t.reference) for t in plain] == [(t.pair, t.reference) for t in decoded[-1]]
    # A clip read as en->en and as en->de is decoded twice, once per prompt.
    assert decoded[-1][0].hypothesis != decoded[-1][1].hypothesis


def test_figures_equal_jiwer_and_sacrebleu_over_the_same_lines(validated, shared_clips):
    _, decoded, metrics, _ = validated
    entries = manifest_lines(shared_clips)
    hypotheses = [t.hypothesis for t in decoded[-1]]
    asr = [(e["text"], h) for e, h in zip(entries, hypotheses, strict=True) if e["target_lang"] == "en"]
    ast = [(e["text"], h) for e, h in zip(entries, hypotheses, strict=True) if e["target_lang"] == "de"]
    assert (len(asr), len(ast)) == (5, 4)
    assert metrics["val_wer"] == pytest.approx(jiwer.wer([r for r, _ in asr], [h for _, h in asr]))
    bleu = sacrebleu.corpus_bleu([h for _, h in ast], [[r for r, _ in ast]]).score / 100
    assert metrics["val_bleu"] == pytest.approx(bleu)


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
