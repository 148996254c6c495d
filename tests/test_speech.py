"""Synthetic speech: espeak-ng synthesis, seeded grammars and cached NeMo manifests."""

from __future__ import annotations

import json
import shutil
import string
import wave
from functools import partial
from pathlib import Path

import pytest

from harness.manifest import manifest_lines
from harness.speech import (
    COMMANDS,
    HOME,
    PRETRAIN_SPLITS,
    PRETRAIN_VOICES,
    all_text,
    build_corpus,
    build_retention_data,
    shuffled_pairs,
    split_pairs,
    synthesize,
)
from harness.speech import synth as synth_module

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason="espeak-ng and sox are not installed (apt-get install espeak-ng sox)",
)

# A corpus of two voices at one rate, half of it translated.
build_tiny = partial(build_corpus, voices=["en-us+m3", "en-gb+f2"], rates=[160], translate_fraction=0.5, seed=0)


def content_words(grammar) -> set[str]:
    return {word for pair in grammar.pairs() for word in pair.english.split()} - {"the", "a", "an"}


@needs_espeak
def test_synthesize_writes_16k_mono_wav(tmp_path: Path) -> None:
    path = tmp_path / "utt.wav"
    duration = synthesize("open the back gate now", path, voice="en-us+m3", rate=160)
    with wave.open(str(path), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        assert wav.getnframes() / 16000 == pytest.approx(duration)
    assert 0.5 < duration < 5.0


def test_missing_program_names_it_and_the_fix(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(synth_module.shutil, "which", lambda name: None if name == "sox" else "/usr/bin/" + name)
    with pytest.raises(RuntimeError, match=r"'sox'.*apt-get install espeak-ng sox"):
        synthesize("hello", tmp_path / "x.wav", voice="en-us", rate=160)


def test_mbrola_voices_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mbrola"):
        synthesize("hello", tmp_path / "x.wav", voice="mb-us1", rate=160)


def test_grammars_are_large_lowercase_and_unpunctuated() -> None:
    allowed = set(string.ascii_lowercase + " äöüß")
    for grammar in (COMMANDS, HOME):
        pairs = grammar.pairs()
        assert len(pairs) == len(grammar) >= 5000
        assert len({pair.english for pair in pairs}) == len(pairs)
        assert all(set(pair.english + pair.german) <= allowed for pair in pairs)


def test_demo_domain_shares_few_content_words_with_pretraining() -> None:
    assert len(content_words(COMMANDS) & content_words(HOME)) <= 2


def test_shuffling_is_seeded() -> None:
    assert shuffled_pairs("commands", seed=3) == shuffled_pairs("commands", seed=3)
    assert shuffled_pairs("commands", seed=3)[:20] != shuffled_pairs("commands", seed=4)[:20]


def test_splits_are_disjoint_and_sized() -> None:
    splits = split_pairs("home", {"train": 400, "validation": 48, "test": 48}, seed=0)
    assert {name: len(pairs) for name, pairs in splits.items()} == {"train": 400, "validation": 48, "test": 48}
    seen = [set(pairs) for pairs in splits.values()]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])


def test_too_large_splits_are_refused() -> None:
    with pytest.raises(ValueError, match="has only"):
        split_pairs("home", {"train": len(HOME) + 1}, seed=0)


def test_tokenizer_text_covers_both_domains() -> None:
    german = all_text("de")
    assert len(german) == len(COMMANDS) + len(HOME)
    assert HOME.pairs()[0].german in german and COMMANDS.pairs()[0].german in german


@needs_espeak
def test_build_corpus_writes_nemo_manifests(tmp_path: Path) -> None:
    manifests = build_tiny("commands", tmp_path, splits={"train": 4, "test": 2})
    train, test = manifest_lines(manifests["train"]), manifest_lines(manifests["test"])
    assert len(train) == 4 and len(test) == 2
    assert not {row["audio_filepath"] for row in train} & {row["audio_filepath"] for row in test}
    for row in train + test:
        assert Path(row["audio_filepath"]).is_absolute() and Path(row["audio_filepath"]).is_file()
        assert row["duration"] > 0 and row["source_lang"] == "en" and row["pnc"] == "no"
        assert (row["target_lang"], row["taskname"]) in {("en", "asr"), ("de", "ast")}


@needs_espeak
def test_build_corpus_is_cached_and_rebuilt_when_arguments_change(tmp_path: Path) -> None:
    splits = {"train": 3, "validation": 2}
    manifests = build_tiny("home", tmp_path, splits=splits)
    files = sorted(tmp_path.rglob("*.wav")) + list(manifests.values())
    before = {path: path.stat().st_mtime_ns for path in files}

    assert build_tiny("home", tmp_path, splits=splits) == manifests
    assert {path: path.stat().st_mtime_ns for path in files} == before

    build_tiny("home", tmp_path, splits=splits, seed=1)
    assert manifests["train"].stat().st_mtime_ns != before[manifests["train"]]


@needs_espeak
def test_the_same_corpus_built_at_two_paths_is_the_same_data(tmp_path: Path) -> None:
    """Two checkouts synthesise byte-identical audio (sox dithers with a random seed unless told to
    repeat), so a trial trains on the same data wherever the demo was built."""
    from harness.provenance import manifest_file

    first = build_tiny("commands", tmp_path / "a", splits={"train": 6})["train"]
    second = build_tiny("commands", tmp_path / "b" / "deeper", splits={"train": 6})["train"]
    for one, two in zip(manifest_lines(first), manifest_lines(second), strict=True):
        assert Path(one["audio_filepath"]).read_bytes() == Path(two["audio_filepath"]).read_bytes()
    assert manifest_file("train", str(first)).sha256 == manifest_file("train", str(second)).sha256


@needs_espeak
def test_the_retention_set_is_the_twins_pretraining_domain_in_unseen_sentences(tmp_path: Path, monkeypatch) -> None:
    """`commands` by the pretraining voices, in the sentences right after the pretraining splits: the twin
    heard the domain and the speakers, never these sentences. Only its own lines are synthesised."""
    spoken: list[dict] = []
    real = synth_module.synthesize

    def synthesize(text, path, **kw):
        spoken.append(kw)
        return real(text, path, **kw)

    monkeypatch.setattr("harness.speech.datasets.synthesize", synthesize)
    manifest = build_retention_data(tmp_path, lines=12)
    assert manifest == tmp_path.resolve() / "retention.json"
    lines = manifest_lines(manifest)
    assert len(lines) == 12 == len(spoken) and {kw["voice"] for kw in spoken} <= set(PRETRAIN_VOICES)
    assert {line["target_lang"] for line in lines} == {"en", "de"}  # transcription and translation, like pretraining
    pretraining = {pair for pairs in split_pairs("commands", PRETRAIN_SPLITS, seed=0).values() for pair in pairs}
    after = shuffled_pairs("commands", seed=0)[sum(PRETRAIN_SPLITS.values()) :][:12]
    assert [line["text"] for line in lines] == [
        p.german if line["target_lang"] == "de" else p.english for p, line in zip(after, lines, strict=True)
    ]
    assert not set(after) & pretraining
    # Cached, and a corpus stamped before `offset` existed (offset 0) still reads as cached.
    assert build_retention_data(tmp_path, lines=12) == manifest and len(spoken) == 12
    stamp = json.loads((tmp_path / "retention" / "corpus-stamp.json").read_text())
    assert stamp["offset"] == sum(PRETRAIN_SPLITS.values())
    build_tiny("commands", tmp_path / "plain", splits={"train": 2})
    assert "offset" not in json.loads((tmp_path / "plain" / "corpus-stamp.json").read_text())
