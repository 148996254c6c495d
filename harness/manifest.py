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
    """All parseable entries plus a Problem for each line that is not a JSON object."""
    entries: list[Entry] = []
    problems: list[Problem] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
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


def manifest_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a manifest already known to be valid (preflight ran), as dicts."""
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def resolve_audio(manifest: Path, audio: str) -> Path:
    """NeMo resolves relative audio paths against the manifest's folder; so do we."""
    path = Path(audio).expanduser()
    return path if path.is_absolute() else manifest.parent / path
