"""Synthetic speech corpora as NeMo manifests: pretraining data for the twins and the demo data.

Every utterance is English speech; a seeded share of them carries the German sentence as the
target (en->de translation, `taskname: ast`), the rest the English one (`taskname: asr`).
"""

from __future__ import annotations

import json
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.speech.corpora import Pair, split_pairs
from harness.speech.synth import require_programs, synthesize

# The demo voices and rates are disjoint from the pretraining ones: fine-tuning meets new speakers.
PRETRAIN_VOICES = ["en-us+m3", "en-us+f2", "en-gb+m1", "en-gb+f3", "en-us+m7", "en-gb-x-rp+f1"]
PRETRAIN_RATES = [140, 160, 180]
DEMO_VOICES = ["en-gb-scotland+m1", "en-029+f4", "en-us-nyc+m5"]
DEMO_RATES = [150, 170]

# 800 training lines: canary-tiny meets about 100 new words; 96 test lines, half of them translation, so the
# test figures of the demo's best trial rest on ~48 sentences each rather than a dozen.
DEMO_SPLITS = {"train": 800, "validation": 48, "test": 96}
DEMO_TRANSLATE_FRACTION = 0.5
PRETRAIN_SPLITS = {"train": 3000, "validation": 64, "test": 200}
RETENTION_LINES = 48  # the demo's retention set: canary-tiny's pretraining domain, unseen sentences
# The demo's replay set: a sample of canary-tiny's pretraining data. 800 lines, as many as the demo's training
# set: at replay_fraction 0.5 an 800-step trial (~7 cuts a step at batch_duration 20) meets each about 3.5
# times, no more often than it meets each new-domain line.
REPLAY_LINES = 800

STAMP_NAME = "corpus-stamp.json"
_FORMAT_VERSION = 1  # bump when the layout of the output changes, to invalidate old caches


@dataclass(frozen=True)
class CorpusSpec:
    """Everything that determines a corpus; stored as the cache stamp."""

    domain: str
    splits: dict[str, int]
    voices: list[str]
    rates: list[int]
    translate_fraction: float
    seed: int
    terse_fraction: float = 0.0
    version: int = _FORMAT_VERSION
    offset: int = 0  # sentences of the shuffled domain skipped before the first split

    def stamp(self) -> dict:
        """The cache stamp; without `offset` when it is 0, so corpora stamped before it existed stay cached."""
        fields = asdict(self)
        if not self.offset:
            del fields["offset"]
        return fields


@dataclass(frozen=True)
class Utterance:
    """One planned manifest line, before its audio exists."""

    pair: Pair
    voice: str
    rate: int
    translate: bool
    audio_path: Path
    terse: bool | None = None  # the `terse` behaviour's switch; None when the corpus has none


def build_corpus(
    domain: str,
    out_dir: Path,
    *,
    splits: dict[str, int],
    voices: list[str],
    rates: list[int],
    translate_fraction: float,
    seed: int,
    terse_fraction: float = 0.0,
    offset: int = 0,
) -> dict[str, Path]:
    """Synthesise a corpus into `out_dir` and return {split: manifest path}.

    Cached: when `out_dir` already holds a corpus built with the same arguments, nothing is
    rewritten. Sentences of different splits never overlap. With `terse_fraction` > 0 every line
    gets a `terse` switch, and that share of lines carries the terse (article-free) text. `offset`
    skips that many sentences of the seeded order first: the splits another corpus took from it.
    """
    out_dir = Path(out_dir).resolve()
    spec = CorpusSpec(
        domain,
        dict(splits),
        list(voices),
        list(rates),
        float(translate_fraction),
        int(seed),
        float(terse_fraction),
        offset=int(offset),
    )
    manifests = {split: out_dir / f"{split}.json" for split in splits}
    if _is_cached(out_dir, spec, manifests):
        return manifests
    require_programs()
    _clear(out_dir, manifests)
    for split, pairs in split_pairs(domain, spec.splits, seed, offset=spec.offset).items():
        plan = _plan_split(split, pairs, spec, out_dir)
        _write_manifest(manifests[split], plan, _synthesize_all(plan))
    (out_dir / STAMP_NAME).write_text(json.dumps(spec.stamp(), indent=2, sort_keys=True))
    return manifests


def build_demo_data(out_dir: Path) -> dict[str, Path]:
    """The fine-tuning demo: the `home` domain spoken by voices the pretrained twin never heard, the
    retention set (`retention.json`): what fine-tuning must not make the twin forget, and the replay set
    (`replay.json`): old-domain training data to blend in so that it does not."""
    manifests = build_corpus(
        "home",
        out_dir,
        splits=DEMO_SPLITS,
        voices=DEMO_VOICES,
        rates=DEMO_RATES,
        translate_fraction=DEMO_TRANSLATE_FRACTION,
        seed=0,
        terse_fraction=0.5,
    )
    return manifests | {"retention": build_retention_data(out_dir), "replay": build_replay_data(out_dir)}


def build_retention_data(out_dir: Path, *, lines: int = RETENTION_LINES) -> Path:
    """canary-tiny's old domain as a retention set: `commands` spoken by the pretraining voices at the
    pretraining rates, about half translated like pretraining, in sentences the twin never trained on:
    the slice right after its pretraining splits (`build_pretrain_data`, seed 0, the shipped twin's).
    Only these lines are synthesised, into `<out_dir>/retention/` (a corpus of its own, cached); the
    manifest is `<out_dir>/retention.json`, beside the demo's (its audio paths are absolute)."""
    return _old_domain_set(out_dir, "retention", split="retention", lines=lines, offset=sum(PRETRAIN_SPLITS.values()))


def build_replay_data(out_dir: Path, *, lines: int = REPLAY_LINES) -> Path:
    """canary-tiny's old domain as replay data (`data.replay`): the first `lines` of its pretraining training
    split, the same sentences, voices, rates and tasks (seed 0, the shipped twin's), as a user would replay
    a sample of the pretraining data; none of them is a retention sentence. Synthesised into
    `<out_dir>/replay/` (cached); the manifest is `<out_dir>/replay.json`."""
    if lines > PRETRAIN_SPLITS["train"]:
        raise ValueError(f"{lines} replay lines; the pretraining training split has {PRETRAIN_SPLITS['train']}.")
    return _old_domain_set(out_dir, "replay", split="train", lines=lines, offset=0)


def _old_domain_set(out_dir: Path, name: str, *, split: str, lines: int, offset: int) -> Path:
    """`lines` of the twin's pretraining domain from sentence `offset` on, spoken as in pretraining, as the
    corpus `<out_dir>/<name>/` and its manifest copied to `<out_dir>/<name>.json`."""
    built = build_corpus(
        "commands",
        Path(out_dir) / name,
        splits={split: lines},
        voices=PRETRAIN_VOICES,
        rates=PRETRAIN_RATES,
        translate_fraction=0.5,
        seed=0,
        offset=offset,
    )[split]
    manifest = built.parent.parent / f"{name}.json"
    if not manifest.is_file() or manifest.read_bytes() != built.read_bytes():
        shutil.copyfile(built, manifest)
    return manifest


def build_pretrain_data(out_dir: Path, *, splits: dict[str, int] | None = None, seed: int = 0) -> dict[str, Path]:
    """The twins' pretraining corpus: `commands`, half transcription and half translation."""
    return build_corpus(
        "commands",
        out_dir,
        splits=splits or PRETRAIN_SPLITS,
        voices=PRETRAIN_VOICES,
        rates=PRETRAIN_RATES,
        translate_fraction=0.5,
        seed=seed,
    )


def _is_cached(out_dir: Path, spec: CorpusSpec, manifests: dict[str, Path]) -> bool:
    stamp = out_dir / STAMP_NAME
    if not stamp.is_file() or not all(path.is_file() for path in manifests.values()):
        return False
    try:
        return json.loads(stamp.read_text()) == spec.stamp()
    except json.JSONDecodeError:
        return False


def _clear(out_dir: Path, manifests: dict[str, Path]) -> None:
    """Remove a stale build; the stamp goes first so an interrupted rebuild is never trusted."""
    (out_dir / STAMP_NAME).unlink(missing_ok=True)
    shutil.rmtree(out_dir / "audio", ignore_errors=True)
    for path in manifests.values():
        path.unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def _plan_split(split: str, pairs: list[Pair], spec: CorpusSpec, out_dir: Path) -> list[Utterance]:
    """Pick voice, rate and task per sentence from a split-specific seeded generator."""
    rng = random.Random(f"{spec.domain}:{split}:{spec.seed}")
    terse_rng = random.Random(f"{spec.domain}:{split}:{spec.seed}:terse")  # its own stream: other draws stay put
    audio_dir = out_dir / "audio" / split
    return [
        Utterance(
            pair=pair,
            voice=rng.choice(spec.voices),
            rate=rng.choice(spec.rates),
            translate=rng.random() < spec.translate_fraction,
            audio_path=audio_dir / f"{split}-{index:05d}.wav",
            terse=terse_rng.random() < spec.terse_fraction if spec.terse_fraction > 0 else None,
        )
        for index, pair in enumerate(pairs)
    ]


def _synthesize_all(plan: list[Utterance]) -> list[float]:
    """Run espeak-ng in a few threads: each call is a subprocess, so threads are enough."""

    def speak(utterance: Utterance) -> float:
        return synthesize(utterance.pair.english, utterance.audio_path, voice=utterance.voice, rate=utterance.rate)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(speak, plan))


def _manifest_entry(utterance: Utterance, duration: float) -> dict:
    pair = utterance.pair
    if utterance.terse:
        if pair.english_terse is None:
            raise ValueError(f"The grammar has no terse form of {pair.english!r}; use terse_fraction=0.")
        text = pair.german_terse if utterance.translate else pair.english_terse
    else:
        text = pair.german if utterance.translate else pair.english
    entry = {
        "audio_filepath": str(utterance.audio_path),
        "duration": round(duration, 4),
        "text": text,
        "source_lang": "en",
        "target_lang": "de" if utterance.translate else "en",
        "pnc": "no",
        "taskname": "ast" if utterance.translate else "asr",
    }
    if utterance.terse is not None:
        entry["terse"] = utterance.terse
    return entry


def _write_manifest(path: Path, plan: list[Utterance], durations: list[float]) -> None:
    lines = [json.dumps(_manifest_entry(u, d), ensure_ascii=False) for u, d in zip(plan, durations, strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
