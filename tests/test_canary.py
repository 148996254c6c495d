"""Config surgery: each sampled knob lands where NeMo reads it; released quirks are neutralised."""

import io
import tarfile
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf, open_dict

from harness.canary import inspect_checkpoint, read_config, released_overrides, trial_config
from harness.errors import ModelError
from harness.spec import BudgetSpec, DataSpec, TrainingSpec

DATA = DataSpec(train="/d/train.json", validation="/d/val.json", text_field="text", lang_field="target_lang")


def _surgery(base, params, max_steps=200):
    return trial_config(
        base,
        params,
        data=DATA,
        training=TrainingSpec(),
        seed=5,
        budget=BudgetSpec(max_steps=max_steps, val_check_interval=50, warmup_fraction=0.1),
    )


def test_tiny_twin_is_a_released_style_canary2_checkpoint(tiny_nemo):
    info = inspect_checkpoint(tiny_nemo)
    assert (info.tokenizer_kind, info.prompt_format, info.languages) == ("aggregate", "canary2", ("de", "en"))
    cfg = info.config
    assert cfg.train_ds.text_field == "answer" and cfg.train_ds.bucket_batch_size
    assert "multitask_metrics_cfg" not in cfg
    assert all(str(e.model_path).startswith("nemo:") for e in cfg.tokenizer.langs.values())


def test_trial_config_applies_every_knob(tiny_nemo):
    base = read_config(tiny_nemo)
    params = {"lr": 2e-3, "batch_duration": 30, "use_loss_mask_for_prompt": False, "weight_decay": 0.01}
    cfg = _surgery(base, params)
    train = cfg.train_ds
    assert train.batch_duration == 30.0 and train.batch_size is None
    assert train.bucket_batch_size is None and train.bucket_duration_bins is None
    assert train.max_duration == 40.0
    assert (train.manifest_filepath, train.text_field, train.lang_field) == ("/d/train.json", "text", "target_lang")
    assert train.seed == train.shard_seed == 5  # reproducible shuffling, not "trng"
    assert (cfg.validation_ds.manifest_filepath, cfg.validation_ds.text_field) == ("/d/val.json", "text")
    assert cfg.test_ds is None
    assert cfg.optim.lr == 2e-3 and cfg.optim.weight_decay == 0.01
    assert cfg.optim.sched.warmup_steps == 20 and cfg.optim.sched.warmup_ratio is None
    assert cfg.use_loss_mask_for_prompt is False
    metrics = cfg.multitask_metrics_cfg.metrics
    assert metrics.wer.constraint == ".source_lang==.target_lang"
    assert metrics.bleu.constraint == ".source_lang!=.target_lang"
    assert cfg.restore_timestamps_model is False
    # Everything else is the pretrained config, untouched; the base itself is not modified.
    assert cfg.encoder == base.encoder and cfg.transf_decoder == base.transf_decoder
    assert cfg.tokenizer == base.tokenizer and cfg.prompt_format == base.prompt_format
    assert base.train_ds.text_field == "answer" and base.train_ds.bucket_batch_size


def test_batches_are_filled_by_1d_duration_buckets_that_batch_duration_governs(tiny_nemo):
    from nemo.collections.common.data.lhotse.dataloader import (
        determine_bucket_duration_bins,
        make_structured_with_schema_warnings,
    )

    base = read_config(tiny_nemo)
    assert len(base.train_ds.bucket_duration_bins[0]) == 2 and base.train_ds.quadratic_duration == 15  # as released
    train = _surgery(base, {"batch_duration": 240}).train_ds
    # batch_duration is the only batch-size knob: no fixed size, no per-bucket sizes (they override it)
    assert train.batch_duration == 240.0 and train.batch_size is None and train.bucket_batch_size is None
    assert train.use_bucketing is True and train.concurrent_bucketing is False  # a thread would reorder batches
    assert train.quadratic_duration is None  # batch_duration counts padded seconds, no d^2 penalty
    assert train.shard_seed == 5 and train.num_buckets == 15 and train.bucket_buffer_size == 10000
    # NeMo derives the bins from the trial's duration bounds: 1-D, evenly spaced inside (0.1, 40).
    bins = determine_bucket_duration_bins(make_structured_with_schema_warnings(train))
    assert len(bins) == 14 and all(isinstance(b, float) for b in bins)
    assert bins[0] == pytest.approx(0.1 + 39.9 / 15) and bins[-1] == pytest.approx(40.0 - 39.9 / 15)


AUGMENTATIONS = ["lowpass_enabled", "clipping_enabled", "rir_enabled", "compression_enabled"]


def _nemo_freeze_updates(cfg):
    """What NeMo's `on_train_start` makes of the config's `freeze_updates`: the per-step freezing plan, or None."""
    from nemo.core.classes.modelPT import ModelPT

    model = SimpleNamespace(cfg=cfg)  # the hook reads `self.cfg` and sets `self._freeze_cfg`, nothing else
    ModelPT.on_train_start(model)
    return model._freeze_cfg


def test_released_keys_that_bypass_the_trial_are_named_and_reset(tiny_nemo):
    from lhotse.testing.dummies import dummy_cut
    from nemo.collections.common.data.lhotse.dataloader import make_structured_with_schema_warnings
    from nemo.collections.common.data.lhotse.sampling import TokenCountFilter, TokenPerSecondFilter

    from tools.twins import apply_overriding_keys

    base = read_config(tiny_nemo)
    assert released_overrides(base) == []  # the packaged twin carries none of them
    dirty = read_config(tiny_nemo)
    apply_overriding_keys(dirty, "/elsewhere/other.json")
    dirty.optim.sched.hold_ratio = 0.1  # relative to max_steps, which is the trial's: kept
    with open_dict(dirty):
        dirty.freeze_updates = {"enabled": True, "modules": {"encoder": 1000}}  # encoder frozen 1000 steps
        dirty.train_ds.update(truncate_duration=2.0, min_tps=3, min_tokens=2, max_tokens=8)
        dirty.train_ds.update(dict.fromkeys(AUGMENTATIONS, True))
        dirty.validation_ds.lowpass_enabled = True  # would alter the audio every figure is scored on
    data_keys = ["input_cfg", "cuts_path", "shar_path", "tarred_audio_filepaths", "is_tarred"]
    data_keys += ["use_multimodal_sampling", "concatenate_samples", "perturb_speed", "noise_path", "truncate_duration"]
    data_keys += [*AUGMENTATIONS, "max_tps", "min_tps"]
    named = released_overrides(dirty)
    assert named == ["freeze_updates"] + [f"train_ds.{k}" for k in data_keys] + [
        "validation_ds.input_cfg",
        "validation_ds.lowpass_enabled",
        "validation_ds.bucket_duration_bins",
        "validation_ds.bucket_batch_size",
        "optim.sched.hold_steps",
    ]
    assert _nemo_freeze_updates(dirty)["modules"] == {"encoder": 1000}  # NeMo would act on each of them
    nemo_dirty = make_structured_with_schema_warnings(dirty.train_ds)
    assert TokenPerSecondFilter(nemo_dirty.min_tps, float("inf")).enabled  # min_tps alone filters

    cfg = _surgery(dirty, {"batch_duration": 30})
    assert released_overrides(cfg) == []
    train, val = cfg.train_ds, cfg.validation_ds
    assert train.input_cfg is None and train.cuts_path is None and train.shar_path is None and not train.is_tarred
    assert not (train.use_multimodal_sampling or train.concatenate_samples or train.perturb_speed)
    assert train.noise_path is None and train.max_tps == float("inf") and train.min_tps == -1
    assert train.manifest_filepath == "/d/train.json" and train.batch_duration == 30.0
    assert val.input_cfg is None and val.bucket_duration_bins is None and val.bucket_batch_size is None
    assert "hold_steps" not in cfg.optim.sched and cfg.optim.sched.hold_ratio == 0.1
    # As NeMo reads them: no freezing plan, no truncation, no augmentation, no token-rate filter.
    assert cfg.freeze_updates is None and _nemo_freeze_updates(cfg) is None
    for loader in (train, val):
        nemo_loader = make_structured_with_schema_warnings(loader)
        assert nemo_loader.truncate_duration is None and not any(nemo_loader[key] for key in AUGMENTATIONS)
        assert not TokenPerSecondFilter(nemo_loader.min_tps, nemo_loader.max_tps).enabled
    # Kept, and harmless: NeMo's token-count filter lets every audio cut through, whatever its bounds.
    assert (train.min_tokens, train.max_tokens) == (2, 8)
    assert TokenCountFilter(train.min_tokens, train.max_tokens, measure_total_length=True)(dummy_cut(0))
    assert dirty.train_ds.input_cfg[0].manifest_filepath == "/elsewhere/other.json"  # base untouched


def test_warmup_scales_with_the_trial_budget(tiny_nemo):
    base = read_config(tiny_nemo)
    assert base.optim.sched.warmup_steps == 2500  # released value: never peaks in a short trial
    assert _surgery(base, {}, max_steps=50).optim.sched.warmup_steps == 5
    assert _surgery(base, {"warmup_fraction": 0.5}, max_steps=50).optim.sched.warmup_steps == 25


def _fake_nemo(path, cfg: dict):
    with tarfile.open(path, "w") as archive:
        data = OmegaConf.to_yaml(OmegaConf.create(cfg)).encode()
        info = tarfile.TarInfo("./model_config.yaml")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return path


def test_mixed_tokenizer_kinds_are_refused(tmp_path):
    mixed = {"prompt_format": "canary2", "tokenizer": {"type": "bpe", "dir": "x", "langs": {"en": {"type": "bpe"}}}}
    with pytest.raises(ModelError, match="unified.*but `tokenizer.langs` is set.*one tokenizer kind"):
        inspect_checkpoint(_fake_nemo(tmp_path / "mixed.nemo", mixed))
    unified = {"prompt_format": "canary2", "tokenizer": {"type": "bpe", "dir": "x"}}
    assert inspect_checkpoint(_fake_nemo(tmp_path / "v2.nemo", unified)).tokenizer_kind == "unified"


def test_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.nemo"
    junk.write_text("hello")
    with pytest.raises(ModelError, match="junk.nemo is not a readable .nemo checkpoint"):
        read_config(junk)
