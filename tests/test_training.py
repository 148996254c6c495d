"""Training: the sampled batch_duration really governs the batches of the trial's dataloader."""

import itertools
import statistics

from harness.canary import inspect_checkpoint, trial_config
from harness.spec import BudgetSpec, DataSpec, TrainingSpec
from harness.training import restore_model

SAMPLE_RATE = 16000


def _batches(tiny_nemo, speech_data, seconds: float, count: int = 6) -> list:
    info = inspect_checkpoint(tiny_nemo)
    data = DataSpec(train=str(speech_data["train"]), validation=str(speech_data["validation"]))
    cfg = trial_config(info.config, {"batch_duration": seconds}, data=data, training=TrainingSpec(accelerator="cpu"),
                       budget=BudgetSpec(max_steps=4, val_check_interval=2), seed=0)
    model = restore_model(tiny_nemo, cfg, trainer=None)
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
