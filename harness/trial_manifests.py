"""The manifests a trial process reads: copies of the user's, each scored line carrying its own identity.

NeMo names a Lhotse cut after its audio file's stem, so two lines that share a clip (the usual
Canary layout: one clip as en->en and as en->de) or two folders' `0001.wav` give cuts with one id,
and anything keyed by that id scores one line several times and another never. Every line of the
scored manifests (validation, test, retention) therefore carries its number in `LINE_FIELD`, which
NeMo hands back in `cut.custom`; `harness.transcripts` keys hypotheses by it. The copies also hold
absolute audio paths, so they read the same from any working directory.

Two sets per sweep, under `<state_dir>/manifests/<sweep>/`: `plain/` for the pretrained model (the
zero-shot baseline, and every process of a sweep without custom behaviours) and `prompted/` with
behaviour tokens (`harness.behaviours.prompted_entry`) for fine-tuned models. Only the prompted set
copies the training manifest (it needs the tokens); the plain set trains on the user's file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path

from harness.behaviours import prompted_entry
from harness.manifest import manifest_lines, resolve_audio
from harness.spec import DataSpec, SweepSpec

LINE_FIELD = "harness_line"  # the line's 0-based number in its manifest
SCORED = ("validation", "test")  # besides the retention manifests


def trial_data(spec: SweepSpec, *, baseline: bool = False) -> DataSpec:
    """The manifests a process reads: plain copies for the zero-shot baseline or a sweep without behaviours,
    prompted copies for a model fine-tuned with behaviours."""
    prompted = bool(spec.behaviours) and not baseline
    folder = spec.state_dir / "manifests" / spec.name / ("prompted" if prompted else "plain")
    return dataclasses.replace(
        spec.data,
        train=str(folder / "train.json") if prompted else spec.data.train,
        validation=str(folder / "validation.json"),
        test=str(folder / "test.json") if spec.data.test else None,
        retention=[str(folder / f"retention-{index}.json") for index in range(len(spec.data.retention))],
    )


def write_trial_manifests(spec: SweepSpec) -> DataSpec:
    """Write both sets (atomically: workers on one host may start together); the trials' set is returned."""
    sets = [(trial_data(spec, baseline=True), False)]
    if spec.behaviours:
        sets.append((trial_data(spec), True))
    for data, prompted in sets:
        for source, target, retention in _copies(spec.data, data, with_train=prompted):
            entries = enumerate(manifest_lines(Path(source)))
            lines = [_line(entry, Path(source), number, spec, prompted, retention) for number, entry in entries]
            _write_atomically(Path(target), lines)
    return sets[-1][0]


def line_number(custom: Mapping | None) -> int | None:
    """A cut's line number in its manifest, from the field NeMo keeps in `cut.custom`; None if absent."""
    value = (custom or {}).get(LINE_FIELD)
    return int(value) if value is not None else None


def _copies(user: DataSpec, copy: DataSpec, *, with_train: bool) -> list[tuple[str, str, bool]]:
    """(user's manifest, its copy, is a retention manifest) for every manifest copied."""
    splits = (*SCORED, "train") if with_train else SCORED
    pairs = [(getattr(user, split), getattr(copy, split), False) for split in splits]
    pairs += [(source, target, True) for source, target in zip(user.retention, copy.retention, strict=True)]
    return [(source, target, retention) for source, target, retention in pairs if source is not None]


def _line(entry: dict, manifest: Path, number: int, spec: SweepSpec, prompted: bool, retention: bool) -> str:
    if prompted:
        entry = prompted_entry(entry, manifest, spec.behaviours, retention=retention)
    else:
        entry = {**entry, "audio_filepath": str(resolve_audio(manifest, entry["audio_filepath"]).resolve())}
    return json.dumps({**entry, LINE_FIELD: number}, ensure_ascii=False)


def _write_atomically(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(partial, path)
