"""Pretrain a twin, evaluate it, save it with the released quirks and verify the archive."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from harness.spec import TrainingSpec
from harness.speech.datasets import build_demo_data, build_pretrain_data
from harness.training import build_trainer
from tools.twins.config import TwinSpec, eval_ds_config, model_config, twin_spec
from tools.twins.paths import REPO_ROOT
from tools.twins.release import apply_release_quirks
from tools.twins.tokenizers import build_tokenizers


class ProgressPrinter(pl.Callback):
    """Print loss, speed and batch size every few hundred steps: pretraining runs unattended."""

    def __init__(self, every: int = 100) -> None:
        self.every = every
        self.last_time = time.monotonic()
        self.cuts = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.cuts += len(batch.cuts)
        step = trainer.global_step
        if step % self.every or not isinstance(outputs, dict) or "loss" not in outputs:
            return
        now = time.monotonic()
        print(
            f"step {step:5d}  loss {float(outputs['loss']):.3f}  {(now - self.last_time) / self.every:.2f} s/step"
            f"  {self.cuts / self.every:.1f} utterances/batch",
            flush=True,
        )
        self.last_time, self.cuts = now, 0

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = {key: float(value) for key, value in trainer.callback_metrics.items() if key.startswith("val_")}
        print(
            f"step {trainer.global_step:5d}  " + "  ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())),
            flush=True,
        )


def evaluate(model: Any, trainer: Any, manifest: Path) -> dict[str, float]:
    """WER (en->en) as a fraction and BLEU (en->de) on 0..100 for one manifest."""
    from omegaconf import DictConfig

    model.setup_validation_data(DictConfig(eval_ds_config(manifest)))
    results = trainer.validate(model, verbose=False)[0]
    return {"wer": float(results["val_wer"]), "bleu": 100.0 * float(results["val_bleu"])}


def pretrain(spec: TwinSpec, *, work_dir: Path, steps: int, seed: int):
    """Build tokenizers, data and model, then train it; returns (model, trainer, manifests)."""
    from nemo.collections.asr.models import EncDecMultiTaskModel
    from omegaconf import OmegaConf

    pl.seed_everything(seed, workers=True)
    manifests = build_pretrain_data(work_dir / "corpora" / "commands", seed=seed)
    tokenizer = build_tokenizers(spec, work_dir / "twins" / spec.name / "tokenizers")
    cfg = OmegaConf.create(model_config(spec, tokenizer, manifests, seed))
    trainer = build_trainer(
        TrainingSpec(), max_steps=steps, val_check_interval=min(500, steps), callbacks=[ProgressPrinter()]
    )
    model = EncDecMultiTaskModel(cfg=cfg, trainer=trainer)
    print(f"{spec.name}: {count_parameters(model):,} parameters, vocabulary {model.tokenizer.vocab_size}", flush=True)
    started = time.monotonic()
    trainer.fit(model)
    print(f"pretraining took {time.monotonic() - started:.0f} s for {steps} steps", flush=True)
    return model, trainer, manifests


def count_parameters(model: Any) -> int:
    """All parameters (the tied embedding/head counted once)."""
    return sum(p.numel() for p in model.parameters())


def report_metrics(model: Any, trainer: Any, manifests: dict[str, Path], demo: dict[str, Path]) -> dict:
    """In-domain test (held-out commands) and zero-shot demo (home, unseen voices) metrics."""
    results = {
        "in-domain commands/test": evaluate(model, trainer, manifests["test"]),
        "zero-shot home/validation": evaluate(model, trainer, demo["validation"]),
    }
    for name, metrics in results.items():
        print(f"{name}: WER {100 * metrics['wer']:.1f}%  BLEU {metrics['bleu']:.1f}", flush=True)
    return results


def save_released(model: Any, name: str, out: Path) -> Path:
    """Write the released quirks into the config and save the archive (tokenizers become `nemo:`)."""
    apply_release_quirks(model.cfg, name)
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save_to(str(out))
    return out


def verify_archive(path: Path) -> None:
    """Restore in a fresh process, as a user would: a same-process check would hide path problems."""
    command = [sys.executable, "-m", "tools.twins", "--verify", str(path)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    print(result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "", flush=True)
    if result.returncode != 0:
        raise RuntimeError(f"Restoring {path} in a fresh process failed:\n{result.stderr[-4000:]}")


def check_restored(path: Path) -> None:
    """Restore the archive and check that its tokenizer paths point inside it."""
    from nemo.collections.asr.models import EncDecMultiTaskModel

    model = EncDecMultiTaskModel.restore_from(str(path), map_location="cpu")
    tokenizer_cfg = model.cfg.tokenizer
    entries = tokenizer_cfg.langs.values() if tokenizer_cfg.get("langs") else [tokenizer_cfg]
    bad = [entry.get("model_path") for entry in entries if not str(entry.get("model_path")).startswith("nemo:")]
    if bad:
        raise AssertionError(f"{path}: tokenizer model paths {bad} do not point inside the archive.")
    if "multitask_metrics_cfg" in model.cfg or model.cfg.train_ds.text_field != "answer":
        raise AssertionError(f"{path}: the released quirks are missing from the saved config.")
    print(
        f"verified {path}: {count_parameters(model):,} parameters, prompt {model.cfg.prompt_format}, "
        f"tokenizer {tokenizer_cfg.type}, model_path {next(iter(entries)).model_path}"
    )


def build_twin(
    name: str = "canary-tiny", *, out: Path, work_dir: Path, steps: int, seed: int = 0, evaluate_model: bool = True
) -> Path:
    """Build, pretrain, evaluate, save and verify one twin; returns the `.nemo` path.

    `evaluate_model=False` skips the held-out evaluation: the structural twins (v1, v2) are
    shipped to test format handling, not accuracy, and decoding an untrained model is only slow.
    """
    spec, work_dir = twin_spec(name), Path(work_dir).resolve()
    model, trainer, manifests = pretrain(spec, work_dir=work_dir, steps=steps, seed=seed)
    if evaluate_model:
        metrics = report_metrics(model, trainer, manifests, build_demo_data(work_dir / "corpora" / "home"))
        metrics_path = work_dir / "twins" / name / "metrics.json"
        metrics_path.write_text(json.dumps({"steps": steps, "seed": seed, **metrics}, indent=2))
    out = save_released(model, name, out)
    print(f"saved {out} ({out.stat().st_size / 1e6:.1f} MB)", flush=True)
    verify_archive(out)
    return out
