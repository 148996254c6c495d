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
copies the training manifest (it needs the tokens); the plain set trains on the user's file. Both copy the
replay manifests (`data.replay`, old-domain training data: `harness.replay`), numbered, with absolute audio
paths; like a retention line, a replay line without a behaviour's field takes the behaviour's default state
(off without one): both are the model's old domain. A trial blending replay reads its sources from its own
`shuffled_copy`, in an order drawn from its seed (`harness.replay.shuffle_blend`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
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
        replay=[str(folder / f"replay-{index}.json") for index in range(len(spec.data.replay))],
    )


def write_trial_manifests(spec: SweepSpec) -> DataSpec:
    """Write both sets (atomically: workers on one host may start together); the trials' set is returned."""
    sets = [(trial_data(spec, baseline=True), False)]
    if spec.behaviours:
        sets.append((trial_data(spec), True))
    for data, prompted in sets:
        for source, target, old_domain in _copies(spec.data, data, with_train=prompted):
            entries = enumerate(manifest_lines(Path(source)))
            lines = [_line(entry, Path(source), number, spec, prompted, old_domain) for number, entry in entries]
            write_atomically(Path(target), lines)
    return sets[-1][0]


def line_number(custom: Mapping | None) -> int | None:
    """A cut's line number in its manifest, from the field NeMo keeps in `cut.custom`; None if absent."""
    value = (custom or {}).get(LINE_FIELD)
    return int(value) if value is not None else None


def _copies(user: DataSpec, copy: DataSpec, *, with_train: bool) -> list[tuple[str, str, bool]]:
    """(user's manifest, its copy, is an old-domain manifest: retention or replay) for every manifest copied."""
    splits = (*SCORED, "train") if with_train else SCORED
    pairs = [(getattr(user, split), getattr(copy, split), False) for split in splits]
    for old_domain in ("retention", "replay"):
        pairs += [(s, t, True) for s, t in zip(getattr(user, old_domain), getattr(copy, old_domain), strict=True)]
    return [(source, target, old_domain) for source, target, old_domain in pairs if source is not None]


def _line(entry: dict, manifest: Path, number: int, spec: SweepSpec, prompted: bool, old_domain: bool) -> str:
    if prompted:
        entry = prompted_entry(entry, manifest, spec.behaviours, retention=old_domain)
    else:
        entry = {**entry, "audio_filepath": str(resolve_audio(manifest, entry["audio_filepath"]).resolve())}
    return json.dumps({**entry, LINE_FIELD: number}, ensure_ascii=False)


def shuffled_copy(manifests: list[str], target: Path, seed: str) -> Path:
    """Write the lines of `manifests` to `target` in a random order drawn from `seed`, audio paths made
    absolute (a line keeps its text otherwise). Lhotse reads a blend's sources in their line order through a
    small window (`harness.batching.apply_blend_buffer`), so a manifest sorted by duration, speaker or corpus
    would reach the batches sorted; its copy reaches them shuffled, and the same seed gives the same order."""
    lines: list[str] = []
    for manifest in map(Path, manifests):
        with manifest.open(encoding="utf-8") as handle:
            lines += [_absolute(line.rstrip("\n"), manifest) for line in handle if line.strip()]
    random.Random(seed).shuffle(lines)
    write_atomically(target, lines)
    return target


def _absolute(line: str, manifest: Path) -> str:
    entry = json.loads(line)
    audio = resolve_audio(manifest, entry["audio_filepath"])
    if str(audio) == entry["audio_filepath"]:
        return line
    return json.dumps({**entry, "audio_filepath": str(audio.resolve())}, ensure_ascii=False)


def write_atomically(path: Path, lines: list[str]) -> None:
    """Write `lines` to `path` at once: processes that write the same file together (the workers of a host,
    the DDP ranks of a trial) each replace it whole, and a reader never sees part of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(partial, path)
