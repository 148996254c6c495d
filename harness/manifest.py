"""NeMo JSON-lines manifests, read with line numbers so every problem can point at `file:line`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, located precisely enough to fix it."""

    where: str  # "path:line" or "path" or a spec key
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class Entry:
    """One manifest line that parsed as a JSON object."""

    line: int
    data: dict[str, Any]


def read_manifest(path: Path) -> tuple[list[Entry], list[Problem]]:
    """All parseable entries plus a Problem for each line that is not UTF-8 or not a JSON object.

    Lines are decoded one by one, so a stray Latin-1 byte is one located problem, not a traceback."""
    entries: list[Entry] = []
    problems: list[Problem] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.append(Problem(f"{path}:{number}", _not_utf8(path, raw, exc)))
                continue
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(
                    Problem(f"{path}:{number}", f"not valid JSON ({exc.msg}); each line must be one JSON object")
                )
                continue
            if not isinstance(data, dict):
                problems.append(Problem(f"{path}:{number}", 'must be a JSON object like {"audio_filepath": ...}'))
                continue
            entries.append(Entry(number, data))
    return entries, problems


def _not_utf8(path: Path, raw: bytes, exc: UnicodeDecodeError) -> str:
    """Which byte is wrong and how to re-encode the file (NeMo reads manifests as UTF-8 too)."""
    return (
        f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); save the manifest as UTF-8 "
        f"(for Latin-1 text: `iconv -f latin1 -t utf-8 {path} > fixed.json`)"
    )


def manifest_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a manifest already known to be valid (preflight ran), as dicts."""
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def resolve_audio(manifest: Path, audio: str) -> Path:
    """NeMo resolves relative audio paths against the manifest's folder; so do we."""
    path = Path(audio).expanduser()
    return path if path.is_absolute() else manifest.parent / path
