"""How a trial's training batches are formed: 1-D duration buckets filled up to `batch_duration`.

Without bucketing, Lhotse's `DynamicCutSampler` pads every batch to its longest cut, so on a real
spread of utterance lengths (1-40 s, median ~7 s) only 42-58% of each batch is audio. NeMo's
Canary recipe keeps bucketing on; this module applies it in the form a sweep needs: 86-92% of
each batch is audio, and a step trains 1.8-4.2x more audio at the same `batch_duration`
(`benchmarks/batch_fill.py`, figures in benchmarks/RESULTS.md).
"""

from __future__ import annotations

from omegaconf import DictConfig

from harness.spec import TrainingSpec

# 15 equal-width buckets between min_duration and max_duration, computed by NeMo itself
# (`linspace(min, max, num_buckets + 1)[1:-1]` when no bins are given and max_duration is finite).
# 20 (NeMo's recipe) and 30 fill 1-3 points more on large data, but on ~1 h of data with
# batch_duration 480 their many half-empty buckets end each epoch with partial batches, and the
# audio per step fell to 1.4-1.7x today's; 15 keeps >= 1.8x there and fills >= 86% everywhere.
NUM_BUCKETS = 15
# Cuts held in the buckets (Lhotse adds `shuffle_buffer_size` to it). A data set smaller than this
# is bucketed whole each epoch; on 100 h of data 1000, 10000 and 40000 filled alike (0.89-0.92),
# while each epoch's first batch waits for the buffer to fill (~1 s more for 40000 on 2 cores).
BUCKET_BUFFER_SIZE = 10000
# No quadratic penalty: `batch_duration` is then the padded seconds of a batch (cuts x longest cut).
# The released penalty (15: a 15 s cut counts double) guards attention memory, but Canary's own
# OOMptimizer batches (released bucket_batch_size) fit more padded seconds in long buckets than
# in short ones (25 x 40 s vs 334 x 2 s), and with it bucketed batches carried only 1.2-1.3x
# today's audio at batch_duration 120.
QUADRATIC_DURATION = None
# Cuts held in the buckets per second of `batch_duration` when sources are blended (harness.replay). A
# blend never ends, and Lhotse picks each batch's bucket uniformly among those ready to fill one, so the
# buffer keeps the cuts of crowded buckets (short ones, which need many cuts per batch) and the batches
# miss them: the batches' share of a source then differs from its weight by up to the buffer's size over
# the cuts trained on. At 10000 + 10000 cuts (the single manifest's buffer and Lhotse's shuffle buffer), the
# demo's 800 steps at batch_duration 20 trained on 16.9% and 39.5% replay cuts for weights of 25% and 50%
# (fill 0.89, 0.87); at 2 per second (40 cuts), 25.5% and 50.8%, each within 1.2 binomial standard errors
# (fill 0.87, 0.85). The buffer is then about 2 x mean cut seconds / steps of the cuts trained on, whatever
# the batch size. 5 and 10 per second filled no better (+0.01 at most) and strayed further on speech-like
# durations at batch_duration 240 (-3.0 and -4.4 standard errors over 400 steps; 2: -0.9).
BLEND_BUFFER_PER_SECOND = 2


def apply_batch_duration(train_ds: DictConfig, seconds: float, training: TrainingSpec) -> None:
    """Make `batch_duration` govern the batch: `seconds` of padded audio, ~90% of it speech.

    The cut that closes a batch may be longer than those before it, so a batch can pad beyond
    `seconds`, as without buckets: by up to 7% on speech-like data at 120-480 s, 18% on the
    demo's 20 s batches of 2-3 s commands.

    Lhotse ignores `batch_duration` while `bucket_batch_size` is set, and 2-D bins without it
    crash, so both are cleared; NeMo then derives 1-D bins from min/max duration. Concurrent
    bucketing fills the buckets from a thread, which makes the batch order depend on timing:
    off, so a trial is reproduced from its recorded seed (`shard_seed`).
    """
    train_ds.update(
        {
            "batch_duration": seconds,
            "batch_size": None,
            "bucket_batch_size": None,
            "bucket_duration_bins": None,
            "use_bucketing": True,
            "num_buckets": NUM_BUCKETS,
            "bucket_buffer_size": BUCKET_BUFFER_SIZE,
            "concurrent_bucketing": False,
            "quadratic_duration": QUADRATIC_DURATION,
            "max_duration": training.max_duration,
            "min_duration": training.min_duration,
        }
    )


def apply_blend_buffer(train_ds: DictConfig) -> None:
    """The bucket buffer of a blend of sources: `BLEND_BUFFER_PER_SECOND` cuts per second of `batch_duration`,
    without Lhotse's shuffle buffer on top. Each source is then read in its line order through that window, so
    a trial reads each from a copy in its seed's order (`harness.replay.shuffle_blend`)."""
    train_ds.update(
        {
            "bucket_buffer_size": max(1, round(BLEND_BUFFER_PER_SECOND * float(train_ds.batch_duration))),
            "shuffle_buffer_size": None,
        }
    )
