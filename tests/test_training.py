"""Training: the sampled batch_duration really governs the batches of the trial's dataloader."""

import itertools
import json
import math
import shutil
import statistics
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from harness.canary import inspect_checkpoint, trial_config
from harness.spec import BudgetSpec, DataSpec, TrainingSpec
from harness.training import BatchStats, build_trainer, restore_model

SAMPLE_RATE = 16000


def _batches(tiny_nemo, speech_data, seconds: float, count: int = 6) -> list:
    model = _model(tiny_nemo, speech_data, {"batch_duration": seconds})
    return list(itertools.islice(iter(model._train_dl), count))


def test_batch_duration_governs_batches_despite_released_bucket_batch_size(tiny_nemo, speech_data):
    released = inspect_checkpoint(tiny_nemo).config.train_ds
    assert released.bucket_batch_size and len(released.bucket_duration_bins[0]) == 2  # 2-D bins, as released
    sizes = {}
    for seconds in (6.0, 24.0):
        batches = _batches(tiny_nemo, speech_data, seconds)
        audio = [float(b.audio_lens.sum()) / SAMPLE_RATE for b in batches]
        assert max(audio) <= seconds, f"a batch holds {max(audio):.1f}s of audio with batch_duration={seconds}"
        sizes[seconds] = statistics.mean(int(b.audio.shape[0]) for b in batches)
    assert sizes[24.0] >= 3 * sizes[6.0], sizes


def test_text_field_is_used_even_though_the_release_says_answer(tiny_nemo, speech_data):
    assert inspect_checkpoint(tiny_nemo).config.train_ds.text_field == "answer"
    batch = _batches(tiny_nemo, speech_data, 10.0, count=1)[0]
    assert int(batch.transcript_lens.min()) > 0, "transcripts are empty: text_field was not applied"


def _model(tiny_nemo, speech_data, params: dict, *, max_steps: int = 20, trainer=None):
    info = inspect_checkpoint(tiny_nemo)
    data = DataSpec(train=str(speech_data["train"]), validation=str(speech_data["validation"]))
    cfg = trial_config(
        info.config,
        params,
        data=data,
        training=TrainingSpec(accelerator="cpu"),
        budget=BudgetSpec(max_steps=max_steps, val_check_interval=max_steps, warmup_fraction=0.1),
        seed=0,
    )
    return restore_model(tiny_nemo, cfg, trainer=trainer)


class _LearningRates(Callback):
    def __init__(self):
        self.seen = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_learning_rate_follows_the_sampled_peak_and_scaled_warmup(tiny_nemo, speech_data):
    lrs = _LearningRates()
    trainer = build_trainer(TrainingSpec(accelerator="cpu"), max_steps=6, val_check_interval=6, callbacks=[lrs])
    model = _model(tiny_nemo, speech_data, {"lr": 2e-3, "batch_duration": 10}, max_steps=20, trainer=trainer)
    trainer.fit(model)
    warmup = 2  # 10% of the trial's 20 steps, not the released 2500
    expected = [
        2e-3 * (s + 1) / (warmup + 1) if s < warmup else 2e-3 / math.sqrt((s + 1) / (warmup + 1)) for s in range(6)
    ]
    assert lrs.seen == pytest.approx(expected, rel=1e-6)
    assert max(lrs.seen) == pytest.approx(2e-3)


def _masked_cross_entropy(model, batch, prompt_only_excluded: bool) -> float:
    """The loss recomputed independently: mean token NLL over answer tokens (or all tokens)."""
    inputs, labels = batch.prompted_transcript[:, :-1], batch.prompted_transcript[:, 1:]
    lengths = batch.prompted_transcript_lens - 1
    log_probs, *_ = model(
        input_signal=batch.audio,
        input_signal_length=batch.audio_lens,
        transcript=inputs,
        transcript_length=batch.prompted_transcript_lens,  # as NeMo's validation_pass passes it
    )
    positions = torch.arange(inputs.shape[1])[None, :]
    mask = positions < lengths[:, None]
    if prompt_only_excluded:
        mask &= positions >= (batch.prompt_lens - 1)[:, None]
    nll = -log_probs.gather(2, labels.unsqueeze(2)).squeeze(2)
    return float(nll[mask].mean())


def test_use_loss_mask_for_prompt_excludes_prompt_tokens_from_the_loss(tiny_nemo, speech_data):
    losses = {}
    for flag in (True, False):
        model = _model(tiny_nemo, speech_data, {"use_loss_mask_for_prompt": flag, "batch_duration": 10}).eval()
        torch.manual_seed(0)
        batch = next(iter(model._validation_dl))
        with torch.no_grad():
            # Recomputed first: NeMo's validation decoding leaves submodules in train mode (dropout on).
            expected = _masked_cross_entropy(model, batch, flag)
            losses[flag] = float(model.eval().validation_pass(batch, 0)["val_loss"])
        assert losses[flag] == pytest.approx(expected, rel=1e-4)
    assert losses[True] != pytest.approx(losses[False], rel=1e-3)


def test_extracted_tokenizers_give_the_same_model_as_the_archive(tiny_nemo, speech_data, tmp_path):
    from harness.tokenizers import extract_tokenizers

    info = inspect_checkpoint(tiny_nemo)
    data = DataSpec(train=str(speech_data["train"]), validation=str(speech_data["validation"]))
    cfg = trial_config(
        info.config,
        {"batch_duration": 10},
        data=data,
        training=TrainingSpec(accelerator="cpu"),
        budget=BudgetSpec(max_steps=20, val_check_interval=20),
        seed=0,
    )
    extracted = cfg.copy()
    extract_tokenizers(tiny_nemo, extracted, tmp_path / "tok")
    assert dict(extracted.tokenizer.langs.en) == {"dir": str((tmp_path / "tok" / "en").resolve()), "type": "bpe"}
    assert {p.name for p in (tmp_path / "tok" / "spl_tokens").iterdir()} >= {"tokenizer.model", "vocab.txt"}
    losses = []
    for config in (cfg, extracted):
        model = restore_model(tiny_nemo, config, trainer=None).eval()
        assert model.tokenizer.vocab_size == 1152 + 2 * 128
        with torch.no_grad():
            losses.append(float(model.validation_pass(next(iter(model._validation_dl)), 0)["val_loss"]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


class _Batches(Callback):
    """What each training step really got: cuts (with their audio sources) and the padded tensor."""

    def __init__(self):
        self.seen = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append(batch)


def test_a_trial_logs_batch_fill_and_audio_seconds_per_step(tiny_nemo, speech_data):
    stats, batches = BatchStats(), _Batches()
    trainer = build_trainer(
        TrainingSpec(accelerator="cpu"), max_steps=4, val_check_interval=4, callbacks=[stats, batches]
    )
    model = _model(tiny_nemo, speech_data, {"batch_duration": 12}, max_steps=4, trainer=trainer)
    trainer.fit(model)
    summary = stats.summary()
    real = [float(b.audio_lens.sum()) for b in batches.seen]
    padded = [b.audio.shape[0] * b.audio.shape[1] for b in batches.seen]
    assert len(real) == 4 and all(r <= 12 * SAMPLE_RATE for r in real)
    assert summary["train_batch_fill"] == pytest.approx(sum(real) / sum(padded))
    assert 0.5 < summary["train_batch_fill"] <= 1.0
    assert summary["train_audio_seconds_per_step"] == pytest.approx(sum(real) / SAMPLE_RATE / 4)
    assert summary["train_audio_seconds_per_step"] == pytest.approx(summary["train_audio_seconds"] / 4)


def test_a_checkpoint_carrying_other_data_and_batching_keys_still_trains_on_the_sweeps_manifest(
    tiny_nemo, speech_data, tmp_path
):
    from tools.twins import apply_overriding_keys, rewrite_config

    other = str(speech_data["validation"])  # what the dirty keys point at: kept, they would train on it
    dirty = rewrite_config(tiny_nemo, tmp_path / "dirty.nemo", lambda cfg: apply_overriding_keys(cfg, other))
    info = inspect_checkpoint(dirty)
    training = TrainingSpec(accelerator="cpu", validation_batch_size=4)
    data = DataSpec(train=str(speech_data["train"]), validation=str(speech_data["validation"]))
    budget = BudgetSpec(max_steps=20, val_check_interval=20, warmup_fraction=0.1)
    cfg = trial_config(info.config, {"batch_duration": 8}, data=data, training=training, budget=budget, seed=0)
    stats, batches = BatchStats(), _Batches()
    trainer = build_trainer(training, max_steps=4, val_check_interval=4, callbacks=[stats, batches])
    model = restore_model(dirty, cfg, trainer=trainer)
    assert next(iter(model._validation_dl)).audio.shape[0] == 4  # validation_batch_size, not 2-D buckets
    encoder = {name: p.detach().clone() for name, p in model.encoder.named_parameters()}
    trainer.fit(model)
    # freeze_updates would have kept the encoder frozen whatever the trial's freeze mode ("none" here).
    assert any(not torch.equal(p, encoder[name]) for name, p in model.encoder.named_parameters())
    train_lines = [json.loads(line) for line in speech_data["train"].read_text().splitlines()]
    durations = {line["audio_filepath"]: line["duration"] for line in train_lines}
    assert len(batches.seen) == 4 and stats.summary()["train_audio_seconds"] > 0
    for batch in batches.seen:
        assert float(batch.audio_lens.sum()) <= 8 * SAMPLE_RATE  # batch_duration governs
        for cut in batch.cuts:  # plain cuts of the sweep's train manifest: no blend, speed copies, glue or noise
            tracks = [t.cut for t in cut.tracks] if type(cut).__name__ == "MixedCut" else [cut]  # padded to the batch
            assert [type(t).__name__ for t in tracks[1:]] == ["PaddingCut"] * (len(tracks) - 1)
            source = tracks[0].recording.sources[0].source
            assert type(tracks[0]).__name__ == "MonoCut" and source in durations
            assert tracks[0].duration == pytest.approx(durations[source], abs=0.01)


def test_batches_do_not_depend_on_where_the_data_lies(tiny_nemo, speech_data, tmp_path):
    """The same data in two places (another checkout, another machine) gives the same batches in the
    same order: nothing path-shaped reaches shuffling, bucketing or cut ids."""
    views = []
    for place in (tmp_path / "a", tmp_path / "much" / "deeper" / "b"):
        (place / "audio").mkdir(parents=True)
        copies = {}
        for split in ("train", "validation"):
            lines = []
            for line in speech_data[split].read_text().splitlines():
                entry = json.loads(line)
                shutil.copy(entry["audio_filepath"], place / "audio")
                lines.append(
                    json.dumps({**entry, "audio_filepath": str(place / "audio" / Path(entry["audio_filepath"]).name)})
                )
            copies[split] = place / f"{split}.json"
            copies[split].write_text("\n".join(lines) + "\n")
        batches = _batches(tiny_nemo, copies, 10.0, count=4)
        views.append([([c.id for c in b.cuts], float(b.audio.sum())) for b in batches])
    assert views[0] == views[1]
