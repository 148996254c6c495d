"""`harness transcribe`: audio files decoded by a `.nemo`, its custom behaviours switched on or off.

Everything that restoring the model and decoding would fail on, late and with pages of NeMo log, is
refused first, all at once (audio, languages, behaviours), from the checkpoint's config read out of the
archive: seconds, not minutes.
"""

from __future__ import annotations

import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness.behaviours import declared_behaviours, is_on, transcribe
from harness.canary import CheckpointInfo, inspect_checkpoint
from harness.errors import DataError, ModelError, UsageError
from harness.model_source import resolve_model
from harness.preflight import audio_problem, model_sample_rate


def behaviour_switches(items: Sequence[str]) -> dict[str, bool]:
    """`["terse=on", "digits=off"]` -> `{"terse": True, "digits": False}`."""
    switches: dict[str, bool] = {}
    for item in items:
        name, _, value = item.partition("=")
        switch = is_on(value)
        if switch is None:
            raise UsageError(f"--behaviour {item!r}: write NAME=on or NAME=off.")
        switches[name] = switch
    return switches


def transcribe_files(
    model: str,
    audio: Sequence[Path],
    *,
    source_lang: str,
    target_lang: str | None,
    behaviours: Sequence[str],
    pnc: str,
) -> list[str]:
    """One hypothesis per audio file, in order, from `model` (a `.nemo` file or a model name `resolve_model`
    knows); `target_lang` None: the source language (ASR); `behaviours` as written on the command line."""
    switches = behaviour_switches(behaviours)
    given = Path(model).expanduser()
    if given.is_dir():
        raise ModelError(f"Model {given} is a directory; pass a .nemo file (e.g. from `harness export`).")
    # An existing file is the model itself, whatever its name (not a Hugging Face id because it has a `/`).
    nemo = given.resolve() if given.is_file() else resolve_model(model)
    if not tarfile.is_tarfile(nemo):
        raise ModelError(f"Model {nemo} is not a .nemo checkpoint (not a tar archive); pass a .nemo file.")
    check_input(inspect_checkpoint(nemo), audio, source_lang=source_lang, target_lang=target_lang, switches=switches)
    restored = restore_for_decoding(nemo)
    return decode(restored, audio, source_lang=source_lang, target_lang=target_lang, switches=switches, pnc=pnc)


def restore_for_decoding(nemo: Path):
    """`nemo` restored for decoding (eval mode) on the GPU where there is one (accelerator auto)."""
    from nemo.collections.asr.models import EncDecMultiTaskModel

    from harness.spec import TrainingSpec
    from harness.training import inference_device

    device = inference_device(TrainingSpec())
    return EncDecMultiTaskModel.restore_from(str(nemo), map_location=device).eval()


def decode(
    restored,
    audio: Sequence[Path | str],
    *,
    source_lang: str,
    target_lang: str | None,
    switches: Mapping[str, bool],
    pnc: str,
) -> list[str]:
    """One hypothesis per audio file (checked by `check_input`), in order, from a `restore_for_decoding` model, its
    behaviours switched by `switches`; `harness transcribe` and the registered pyfunc (`harness.pyfunc`) both
    decode here."""
    hypotheses = transcribe(
        restored,
        [str(path) for path in audio],
        source_lang=source_lang,
        target_lang=target_lang or source_lang,
        behaviours=switches,
        pnc=pnc,
        batch_size=8,
        verbose=False,
    )
    return [getattr(hypothesis, "text", hypothesis).strip() for hypothesis in hypotheses]


def check_input(
    info: CheckpointInfo,
    audio: Sequence[Path],
    *,
    source_lang: str,
    target_lang: str | None,
    switches: dict[str, bool],
) -> None:
    """Refuse audio that is missing, undecodable, stereo or at another rate, unknown languages and behaviours,
    and a behaviour without a default left unswitched. Reading `info` from the archive has already refused a
    file that is not a `.nemo`."""
    problems = [p for _, p in (audio_problem(path, model_sample_rate(info)) for path in audio) if p]
    for option, lang in (("--source-lang", source_lang), ("--target-lang", target_lang)):
        plain = lang and lang.removeprefix("<|").removesuffix("|>")
        if info.languages and plain and plain not in info.languages:
            problems.append(
                f"{option} {lang!r} is not a language of {info.path.name} (it has {', '.join(info.languages)})"
            )
    declared = declared_behaviours(info.config)
    for name in sorted(set(switches) - set(declared)):
        problems.append(
            f"--behaviour {name}: {info.path.name} declares no behaviour {name!r} "
            f"(it has: {', '.join(sorted(declared)) or 'none'})"
        )
    for name, behaviour in sorted(declared.items()):
        if name not in switches and behaviour.default is None:
            problems.append(f"--behaviour {name}=on or {name}=off is required: {info.path.name} declares no default")
    if len(problems) == 1:
        raise DataError(problems[0] + ".")
    if problems:
        raise DataError("Nothing was transcribed:\n" + "\n".join(f"  {p}" for p in problems))
