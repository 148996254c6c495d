"""Provenance: data is identified by content (audio bytes and fields), not by where it lies."""

import json
import shutil
from pathlib import Path

from harness.provenance import manifest_file


def _copy(src: Path, dst: Path, *, relative: bool, edit=None) -> Path:
    """The manifest and its audio under `dst`, with relative or absolute audio paths."""
    (dst / "audio").mkdir(parents=True)
    lines = []
    for line in src.read_text().splitlines():
        entry = json.loads(line)
        audio = dst / "audio" / Path(entry["audio_filepath"]).name
        shutil.copy(entry["audio_filepath"], audio)
        entry["audio_filepath"] = f"audio/{audio.name}" if relative else str(audio)
        lines.append(json.dumps(edit(entry) if edit else entry))
    (dst / "train.json").write_text("\n".join(lines) + "\n")
    return dst / "train.json"


def test_a_copy_elsewhere_has_the_same_checksum(speech_data, tmp_path):
    original = manifest_file("train", str(speech_data["train"]), tmp_path / "cache.json")
    copy = manifest_file("train", str(_copy(speech_data["train"], tmp_path / "x" / "y", relative=True)))
    assert copy.sha256 == original.sha256 and copy.lines == original.lines and copy.hours == original.hours
    assert json.loads((tmp_path / "cache.json").read_text())  # audio hashes are remembered


def test_changed_text_or_audio_changes_the_checksum(speech_data, tmp_path):
    original = manifest_file("train", str(speech_data["train"])).sha256
    retexted = _copy(
        speech_data["train"], tmp_path / "t", relative=False, edit=lambda e: {**e, "text": e["text"] + "!"}
    )
    assert manifest_file("train", str(retexted)).sha256 != original
    altered = _copy(speech_data["train"], tmp_path / "a", relative=False)
    first_audio = Path(json.loads(altered.read_text().splitlines()[0])["audio_filepath"])
    data = bytearray(first_audio.read_bytes())
    data[-1] ^= 1
    first_audio.write_bytes(bytes(data))
    assert manifest_file("train", str(altered), tmp_path / "cache.json").sha256 != original
