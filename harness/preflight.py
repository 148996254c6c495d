"""Preflight: check the sweep's input against the model before any training (or GPU time).

Every problem is collected, located (`file:line` or spec key) and reported at once; nothing
trains while any remains. What is checked is what would otherwise fail late or, worse, train
silently on garbage: unreadable manifests, missing or undecodable audio, zero durations or durations
that do not match the audio (`duration_mismatch`), empty transcripts, a text field that is not there,
languages the tokenizer cannot produce, prompt fields the prompt format requires, custom behaviours
(tokens the tokenizer has, a switch on every line, no decoder context they would break), and a
validation set with no samples for the objective.
Retention manifests (`data.retention`) and replay manifests (`data.replay`, old-domain training data) are
checked like the others, replay lines against `training.max_duration` like training lines, and no retention
line may replay a replay line's audio; the lines of both may omit a behaviour's field (see `harness.behaviours`).
"""

from __future__ import annotations

import math
from pathlib import Path

import soundfile

from harness import behaviours, devices
from harness.canary import CheckpointInfo
from harness.errors import DataError
from harness.manifest import Entry, Problem, read_manifest, resolve_audio
from harness.spec import SweepSpec
from harness.tokenizers import special_tokens

SHOWN = 25
TEXT_FIELD_CANDIDATES = ("text", "answer", "transcript", "sentence", "pred_text")
# How far a manifest `duration` may differ from the audio file, either way: the larger of the first two, at most
# the third. Manifests round durations (2-3 decimals: 5 ms), and decoders disagree on compressed audio (codec delay
# and padding, about 0.1 s; a VBR file's length estimated from its bitrate, a share of the whole). Lhotse refuses,
# in every trial, a line with a `sampling_rate` whose audio is off by more than 0.5 s (its default
# LHOTSE_AUDIO_DURATION_MISMATCH_TOLERANCE). A bigger gap is another file, a wrong sample rate, or audio trimmed
# after the manifest was written.
DURATION_TOLERANCE_S = 0.1
DURATION_TOLERANCE_SHARE = 0.01
DURATION_TOLERANCE_MAX_S = 0.5
TRAINED = ("train", "replay")  # manifests a trial trains on (`replay`, `replay[1]`, ...)
OLD_DOMAIN = ("retention", "replay")  # the model's old domain: a behaviour's field may be left out


def check_spec(spec: SweepSpec) -> list[Problem]:
    """Budget settings that would make a trial never validate at its last step, and a GPU that is not there.

    Single numbers are range-checked when the spec is loaded (harness.spec); these depend on each
    other, on a command-line override (`--trials`) or on the machine."""
    problems = []
    budget = spec.budget
    where = spec.source or spec.name
    if budget.trials < 1:
        problems.append(Problem(where, "`budget.trials` must be at least 1"))
    problems += _check_accelerator(spec, where)
    if budget.val_check_interval < 1 or budget.max_steps < budget.val_check_interval:
        problems.append(Problem(where, "`budget.val_check_interval` must be between 1 and `budget.max_steps`"))
    elif budget.max_steps % budget.val_check_interval:
        problems.append(
            Problem(
                where,
                "`budget.max_steps` must be a multiple of `budget.val_check_interval` "
                "so that every trial is validated at its final step",
            )
        )
    return problems


def _check_accelerator(spec: SweepSpec, where: str) -> list[Problem]:
    """`accelerator: gpu` on a machine without one fails inside every trial; say so once, up front."""
    accelerator = spec.training.accelerator
    if accelerator not in ("gpu", "cuda"):
        return []
    if devices.visible_gpus():
        return []
    return [
        Problem(
            where,
            f"`training.accelerator` is {accelerator}, but no GPU is visible on this machine (torch sees no CUDA "
            "device); set `training.accelerator: auto` (the GPU where there is one, else the CPU) or `cpu`",
        )
    ]


def check_manifest(
    path: Path, spec: SweepSpec, info: CheckpointInfo, *, split: str
) -> tuple[list[Entry], list[Problem]]:
    """Check one manifest; returns its entries (for set-level checks) and the problems found."""
    if not path.is_file():
        return [], [
            Problem(str(path), f"manifest does not exist; set `data.{split}` in {spec.source} to a NeMo manifest")
        ]
    try:
        entries, problems = read_manifest(path)
    except OSError as exc:
        return [], [Problem(str(path), f"manifest cannot be read ({exc.strerror or exc}); check its permissions")]
    for entry in entries:
        problems += _check_entry(path, entry, spec, info, split)
    text_field = spec.data.text_field
    texts = [e.data.get(text_field) for e in entries]
    if entries and all(isinstance(t, str) and not t.strip() for t in texts):
        problems.append(Problem(str(path), f"every `{text_field}` is empty; nothing to learn from"))
    if not entries and not problems:
        problems.append(Problem(str(path), "manifest is empty"))
    return entries, problems


def _check_entry(path: Path, entry: Entry, spec: SweepSpec, info: CheckpointInfo, split: str) -> list[Problem]:
    where = f"{path}:{entry.line}"
    data = entry.data
    problems = []
    audio = data.get("audio_filepath")
    duration = data.get("duration")
    duration_problem = _duration_problem(duration)
    if not isinstance(audio, str):
        problems.append(Problem(where, "missing `audio_filepath`"))
    else:
        known = None if duration_problem else duration
        problems += _check_audio(where, resolve_audio(path, audio), known, data.get("offset"), model_sample_rate(info))
    if duration_problem:
        problems.append(Problem(where, duration_problem))
    elif split.startswith(TRAINED) and duration is not None and duration > spec.training.max_duration:
        problems.append(
            Problem(
                where,
                f"duration {duration:.1f}s exceeds `training.max_duration` ({spec.training.max_duration}s); "
                "it would be dropped from training: raise the limit or cut the audio",
            )
        )
    problems += _check_text(where, data, spec.data.text_field)
    problems += _check_languages(where, data, spec, info)
    problems += behaviours.check_entry(
        where,
        data,
        spec,
        prompt_format=info.prompt_format,
        tokenizer_kind=info.tokenizer_kind,
        retention=split.startswith(OLD_DOMAIN),
    )
    return problems


def _duration_problem(duration) -> str | None:
    """Why a manifest `duration` is unusable, or None. NaN passes `<= 0` and infinity every limit."""
    if isinstance(duration, bool) or not isinstance(duration, int | float):
        return f"`duration` must be a positive number of seconds, not {duration!r}"
    if math.isnan(duration):
        return "`duration` is NaN; write the audio's length in seconds (e.g. from `soxi -D FILE`)"
    if math.isinf(duration):
        return "`duration` is infinite; write the audio's length in seconds (e.g. from `soxi -D FILE`)"
    if duration <= 0:
        return f"`duration` must be a positive number of seconds, not {duration!r}"
    return None


def model_sample_rate(info: CheckpointInfo) -> int | None:
    """The sample rate the checkpoint's preprocessor expects (16 kHz for every Canary), if it says."""
    rate = info.config.get("sample_rate") or (info.config.get("preprocessor") or {}).get("sample_rate")
    return int(rate) if rate else None


def audio_problem(audio: Path, sample_rate: int | None) -> tuple[float | None, str | None]:
    """(seconds, None) for a mono file at the model's rate, else (seconds or None, what is wrong and the fix).

    Refused rather than resampled: NeMo fails on stereo late, in every trial ("Expected ... single
    channel"); another rate would be resampled on the fly in every epoch's data loading. One `sox`
    run fixes both for good."""
    if not audio.is_file():
        return None, f"audio file {audio} does not exist"
    try:
        header = soundfile.info(str(audio))
    except Exception as exc:  # noqa: BLE001 - any decoder error means "cannot train on this"
        return None, f"audio file {audio} cannot be decoded ({exc}); use WAV or FLAC"
    seconds = header.frames / header.samplerate if header.samplerate else None
    wrong = []
    if header.channels != 1:
        wrong.append(f"{header.channels} channels (the model takes mono)")
    if sample_rate and header.samplerate != sample_rate:
        wrong.append(f"a sample rate of {header.samplerate} Hz (the model takes {sample_rate} Hz)")
    if not wrong:
        return seconds, None
    rate = sample_rate or header.samplerate
    fixed = audio.with_name(f"{audio.stem}-mono-{rate}.wav")
    return seconds, (
        f"audio file {audio} has {' and '.join(wrong)}; convert it, e.g. `sox {audio} -r {rate} -c 1 {fixed}`"
    )


def _check_audio(
    where: str, audio: Path, duration: float | None, offset: object, sample_rate: int | None
) -> list[Problem]:
    actual, problem = audio_problem(audio, sample_rate)
    if problem:
        return [Problem(where, problem)]
    if duration is None or actual is None:
        return []
    problem = duration_mismatch(duration, offset, actual)
    return [Problem(where, problem)] if problem else []


def duration_tolerance(actual: float) -> float:
    """Seconds a manifest duration may be off: `DURATION_TOLERANCE_S` or `DURATION_TOLERANCE_SHARE` of the audio,
    whichever is larger (rounding and decoder differences), at most `DURATION_TOLERANCE_MAX_S` (Lhotse's limit)."""
    return min(DURATION_TOLERANCE_MAX_S, max(DURATION_TOLERANCE_S, DURATION_TOLERANCE_SHARE * actual))


def duration_mismatch(duration: float, offset: object, actual: float) -> str | None:
    """Why a line's `duration` (and `offset`) do not fit its audio of `actual` seconds, or None.

    Both directions matter (measured with NeMo 3.0's Lhotse adapter, `nemo_adapters.py` `_create_cut`): with an
    `offset` NeMo cuts the audio to `offset` + `duration`, so a short duration trains on a clipped utterance
    against its whole transcript; with a `sampling_rate` Lhotse refuses, in every trial, audio whose length is
    off by more than 0.5 s; without either NeMo reads the whole file, and the wrong figure misleads the
    `training.max_duration` check and the report's hours of audio. A gap this large points at the wrong file
    or the wrong rate. With an `offset` the line is a segment of a longer file: it must end inside the file."""
    tolerance = duration_tolerance(actual)
    beyond = (
        f"beyond the {tolerance:.2f}s tolerance ({DURATION_TOLERANCE_S:g}s or {DURATION_TOLERANCE_SHARE:.0%} of the "
        f"audio, whichever is larger, at most {DURATION_TOLERANCE_MAX_S:g}s)"
    )
    fix = "write the audio's length in seconds (e.g. from `soxi -D FILE`), or point the line at its own audio file"
    if offset is not None:
        if isinstance(offset, bool) or not isinstance(offset, int | float) or not 0 <= offset < math.inf:
            return f"`offset` must be a number of seconds >= 0 into the audio file, not {offset!r}"
        end = offset + duration
        if end <= actual + tolerance:
            return None
        return (
            f"`offset` {offset:.2f}s + `duration` {duration:.2f}s ends {end - actual:.2f}s past the end of the "
            f"audio ({actual:.2f}s), {beyond}: {fix}"
        )
    gap = duration - actual
    if abs(gap) <= tolerance:
        return None
    how = "longer" if gap > 0 else "shorter"
    return f"`duration` {duration:.2f}s is {abs(gap):.2f}s {how} than the audio ({actual:.2f}s), {beyond}: {fix}"


def _check_text(where: str, data: dict, text_field: str) -> list[Problem]:
    """The text field must exist and hold a string; suggest the field the manifest does use."""
    if text_field not in data:
        present = [f for f in TEXT_FIELD_CANDIDATES if isinstance(data.get(f), str)]
        hint = f"; it has `{present[0]}`: set `data.text_field: {present[0]}`" if present else ""
        return [Problem(where, f"no `{text_field}` field{hint}")]
    if not isinstance(data[text_field], str):
        return [Problem(where, f"`{text_field}` must be a string, not {type(data[text_field]).__name__}")]
    return []


def _check_languages(where: str, data: dict, spec: SweepSpec, info: CheckpointInfo) -> list[Problem]:
    """Languages the prompt needs, known to the tokenizer; canary (v1) also needs task and pnc."""
    problems = []
    required = ["source_lang", "target_lang"]
    if spec.data.lang_field not in required:
        required.append(spec.data.lang_field)
    if info.prompt_format == "canary":
        required += ["pnc"]
        if "taskname" not in data and "task" not in data:
            problems.append(Problem(where, "missing `taskname` (asr or ast), required by the canary prompt format"))
    for key in required:
        if key not in data:
            problems.append(Problem(where, f"missing `{key}`, required by the {info.prompt_format} prompt format"))
    if info.languages:
        for key in ("source_lang", "target_lang"):
            lang = data.get(key)
            if isinstance(lang, str) and lang not in info.languages:
                problems.append(
                    Problem(
                        where,
                        f"`{key}` is {lang!r}, which the model's tokenizer does not cover "
                        f"(it has {', '.join(info.languages)})",
                    )
                )
    return problems


def _check_objective_samples(path: Path, entries: list[Entry], spec: SweepSpec) -> list[Problem]:
    """WER needs same-language samples and BLEU translation samples in the validation set."""
    same = sum(1 for e in entries if e.data.get("source_lang") == e.data.get("target_lang"))
    asr = ("ASR (source_lang == target_lang)", same)
    needs = {"wer": asr, "wer_normalized": asr, "bleu": ("translation", len(entries) - same)}
    metrics = ["wer", "bleu"] if spec.objective.metric in ("mix", "pareto") else [spec.objective.metric]
    return [
        Problem(str(path), f"no {kind} samples, so the objective `{spec.objective.metric}` cannot be computed")
        for kind, count in (needs[m] for m in metrics)
        if entries and count == 0
    ]


def _check_retention_samples(manifests: dict[str, list[Entry]], spec: SweepSpec) -> list[Problem]:
    """The retention limit compares retention WER, which needs same-language lines in the retention set."""
    entries = [e for split, found in manifests.items() if split.startswith("retention") for e in found]
    if spec.objective.retention_max_wer_increase is None or not entries:
        return []
    if any(e.data.get("source_lang") == e.data.get("target_lang") for e in entries):
        return []
    where = ", ".join(spec.data.retention)
    return [
        Problem(
            where,
            "no ASR (source_lang == target_lang) lines in `data.retention`, so the retention WER that "
            "`objective.retention_max_wer_increase` limits cannot be computed",
        )
    ]


def _check_replay_held_out(manifests: dict[str, list[Entry]], spec: SweepSpec) -> list[Problem]:
    """A retention line must not be a replay line: trials would train on what it scores as kept."""
    replayed = _clips(manifests, spec, "replay")
    return [
        Problem(
            where,
            f"the same audio as the replay line {replayed[clip]}: trials would train on what the retention set "
            "scores; hold retention lines out of `data.replay`",
        )
        for clip, where in _clips(manifests, spec, "retention").items()
        if clip in replayed
    ]


def _clips(manifests: dict[str, list[Entry]], spec: SweepSpec, name: str) -> dict[tuple[Path, object], str]:
    """Each clip (audio file, offset) of the `data.<name>` manifests, with the location of its first line."""
    paths = _manifest_keys(spec)
    found: dict[tuple[Path, object], str] = {}
    for split, entries in manifests.items():
        for entry in entries if split.startswith(name) else ():
            audio = entry.data.get("audio_filepath")
            if isinstance(audio, str):
                clip = (resolve_audio(Path(str(paths[split])), audio).resolve(), entry.data.get("offset"))
                found.setdefault(clip, f"{paths[split]}:{entry.line}")
    return found


def _manifest_keys(spec: SweepSpec) -> dict[str, str | None]:
    """Each manifest by its key under `data` (`retention[1]` for the second of several)."""
    keys: dict[str, str | None] = {"train": spec.data.train, "validation": spec.data.validation, "test": spec.data.test}
    for name in OLD_DOMAIN:
        paths = getattr(spec.data, name)
        keys |= {f"{name}[{i}]" if len(paths) > 1 else name: path for i, path in enumerate(paths)}
    return keys


def preflight(spec: SweepSpec, info: CheckpointInfo) -> dict[str, list[Entry]]:
    """Run every check; raise one DataError listing all problems, or return the parsed manifests."""
    problems = check_spec(spec)
    if spec.behaviours:
        problems += behaviours.check_declaration(spec, special_tokens(info))
    manifests = {}
    for split, value in _manifest_keys(spec).items():
        if value is None:
            continue
        entries, found = check_manifest(Path(value), spec, info, split=split)
        manifests[split] = entries
        problems += found
    problems += _check_objective_samples(Path(spec.data.validation), manifests.get("validation", []), spec)
    problems += _check_retention_samples(manifests, spec)
    problems += _check_replay_held_out(manifests, spec)
    if problems:
        shown = "\n".join(f"  {p}" for p in problems[:SHOWN])
        more = f"\n  ... and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        raise DataError(f"Preflight found {len(problems)} problem(s); nothing was trained:\n{shown}{more}")
    return manifests
