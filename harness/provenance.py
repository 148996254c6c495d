"""Provenance of a sweep: what code, model, data and hardware produced its numbers.

A tuned learning rate is only worth trusting if someone else can tell what it was tuned on. The
report records package versions, the harness commit (and whether the tree had local edits), the
checksum of the pretrained checkpoint and of every manifest's data (audio and text by content, not
by path), the hardware and the seeds, so a
re-run that disagrees can be traced to what changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import harness
from harness.checkout import git_commit, git_dirty
from harness.errors import ModelError
from harness.manifest import resolve_audio
from harness.model_source import resolve_model
from harness.spec import SweepSpec
from harness.trial_manifests import LINE_FIELD

PACKAGES = ("nemo_toolkit", "torch", "lightning", "optuna", "mlflow")
CHUNK = 1 << 20
AUDIO_HASHES_FILE = "audio-sha256.json"  # in the state dir: audio hashes by (path, size, mtime)


@dataclass
class InputFile:
    """A file the sweep read, identified by content rather than by name."""

    role: str
    path: str
    sha256: str | None
    lines: int | None = None
    hours: float | None = None
    note: str = ""


@dataclass
class Provenance:
    """Everything needed to tell whether a later run used the same inputs."""

    versions: dict[str, str]
    git_commit: str | None
    git_dirty: bool | None
    checkpoint: InputFile
    manifests: list[InputFile]
    hardware: str
    sampler_seed: int
    training_seed: int
    trial_seeds: dict[int, int] = field(default_factory=dict)


def collect(spec: SweepSpec, trial_seeds: dict[int, int]) -> Provenance:
    """Gather provenance for `spec`; `trial_seeds` maps trial number to its recorded training seed."""
    commit = git_commit()
    return Provenance(
        versions=package_versions(),
        git_commit=commit,
        git_dirty=git_dirty() if commit else None,
        checkpoint=checkpoint_file(spec.model),
        manifests=[manifest_file(role, path, spec.state_dir / AUDIO_HASHES_FILE) for role, path in _manifests(spec)],
        hardware=hardware(),
        sampler_seed=spec.sampler.seed,
        training_seed=spec.training.seed,
        trial_seeds=dict(sorted(trial_seeds.items())),
    )


def package_versions() -> dict[str, str]:
    """Installed versions of the harness and the libraries whose behaviour decides the metrics."""
    return {"harness": harness.__version__, **installed_versions(PACKAGES)}


def installed_versions(names: tuple[str, ...]) -> dict[str, str]:
    """Each package's installed version, "not installed" where it is missing."""
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def sha256(path: Path) -> str:
    """Content hash, streamed: checkpoints are gigabytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_file(model: str) -> InputFile:
    """The pretrained `.nemo` the sweep fine-tuned; unresolvable here (e.g. offline) is recorded, not fatal."""
    try:
        path = resolve_model(model)
    except ModelError as exc:
        return InputFile("checkpoint", model, None, note=str(exc))
    return InputFile("checkpoint", str(path), sha256(path), note=f"model: {model} -> {path.name}")


def manifest_file(role: str, path_text: str, cache: Path | None = None) -> InputFile:
    """Line count, total audio hours (sum of `duration`) and a hash of the data by content.

    The hash covers each line's audio bytes and its other fields, never `audio_filepath` (nor the line
    number of the harness's copies): the same data copied to another machine or checkout has the same
    hash, and a changed recording or transcript a different one. Audio hashes are cached by (path,
    size, mtime) in `cache`.
    """
    path = Path(path_text)
    if not path.is_file():
        return InputFile(role, path_text, None, note="missing on this machine")
    audio = AudioHashes(cache)
    digest = hashlib.sha256()
    lines, seconds, missing = 0, 0.0, 0
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            lines += 1
            try:  # preflight reports malformed lines; provenance only describes the file
                entry = json.loads(line)
                seconds += float(entry.get("duration", 0.0))
                audio_hash = audio.of(resolve_audio(path, str(entry.pop("audio_filepath"))))
                entry.pop(LINE_FIELD, None)  # a copy's line numbers repeat the order the hash already covers
            except (ValueError, TypeError, AttributeError, KeyError, OSError):
                entry, audio_hash = line.strip(), None
                missing += 1
            digest.update(f"{audio_hash}\t{json.dumps(entry, sort_keys=True)}\n".encode())
    audio.save()
    note = "content: audio bytes + fields" + (f"; {missing} lines without readable audio" if missing else "")
    return InputFile(role, str(path.resolve()), digest.hexdigest(), lines=lines, hours=seconds / 3600, note=note)


class AudioHashes:
    """sha256 of audio files, remembered by (path, size, mtime): a report re-hashes only what changed."""

    def __init__(self, cache: Path | None) -> None:
        self.cache = cache
        self.known: dict[str, list] = {}
        if cache is not None and cache.is_file():
            with contextlib.suppress(ValueError, OSError):
                self.known = json.loads(cache.read_text())

    def of(self, audio: Path) -> str:
        stat = audio.stat()
        key, stamp = str(audio.resolve()), [stat.st_size, stat.st_mtime_ns]
        remembered = self.known.get(key)
        if remembered and remembered[:2] == stamp:
            return remembered[2]
        value = sha256(audio)
        self.known[key] = [*stamp, value]
        return value

    def save(self) -> None:
        if self.cache is not None:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            partial = self.cache.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(self.known))
            os.replace(partial, self.cache)


def hardware() -> str:
    """The GPU the trials ran on, else the CPU model and core count (what sets speed and numerics)."""
    try:
        import torch

        if torch.cuda.is_available():
            count = torch.cuda.device_count()
            return f"{count} x {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    except ImportError:
        pass
    return f"CPU: {cpu_model()}, {os.cpu_count()} cores"


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _manifests(spec: SweepSpec) -> list[tuple[str, str]]:
    data = spec.data
    roles = [("train", data.train), ("validation", data.validation), ("test", data.test)]
    old_domain = [*(("retention", p) for p in data.retention), *(("replay", p) for p in data.replay)]
    return [(role, path) for role, path in [*roles, *old_domain] if path]
