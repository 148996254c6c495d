"""Text-to-speech with espeak-ng, so the twins can be trained and demoed without any download."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

REQUIRED_PROGRAMS = ("espeak-ng", "sox")


def require_programs() -> None:
    """Fail early with a fix instead of a broken pipe deep inside a corpus build."""
    for program in REQUIRED_PROGRAMS:
        if shutil.which(program) is None:
            raise RuntimeError(
                f"The program '{program}' is not installed; install it with `apt-get install espeak-ng sox`."
            )


def wav_duration(path: Path) -> float:
    """Read the duration from the WAV header (cheaper than decoding the audio)."""
    with wave.open(str(path), "rb") as wav:
        return wav.getnframes() / float(wav.getframerate())


def synthesize(text: str, out_path: Path, *, voice: str, rate: int, sample_rate: int = 16000) -> float:
    """Speak `text` into a mono 16-bit WAV at `sample_rate` and return its duration in seconds.

    `voice` is an espeak-ng voice with an optional variant (`en-us+m3`); mbrola (`mb-*`) voices
    are not supported because they are usually not installed. `rate` is in words per minute.
    """
    if voice.startswith("mb"):
        raise ValueError(f"Voice '{voice}' is an mbrola voice; use an espeak-ng voice such as 'en-us+m3'.")
    require_programs()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    speak = subprocess.Popen(
        ["espeak-ng", "-v", voice, "-s", str(rate), "--stdout", text],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # -R: sox dithers with a random seed otherwise, and the same corpus built in two checkouts differs
    convert = subprocess.run(
        ["sox", "-R", "-q", "-t", "wav", "-", "-r", str(sample_rate), "-c", "1", "-b", "16", str(out_path)],
        stdin=speak.stdout,
        capture_output=True,
    )
    assert speak.stdout is not None and speak.stderr is not None  # both are pipes
    speak.stdout.close()
    speak_err = speak.stderr.read().decode(errors="replace").strip()
    speak.stderr.close()
    if speak.wait() != 0 or convert.returncode != 0:
        detail = speak_err or convert.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"Synthesising '{text}' with voice '{voice}' failed: {detail}")
    return wav_duration(out_path)
