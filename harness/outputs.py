"""Folders a command writes into at the user's word (`export --out`, `demo-data --out`, the report's folder).

A path whose folder part runs through an existing file (`--out notes.txt/model.nemo`) fails in `mkdir` with
`FileExistsError` or `NotADirectoryError`, as a traceback that names neither the option nor the file in the
way. These checks say both in one sentence before anything is written.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import OutputError


def blocking_file(folder: Path) -> Path | None:
    """The first of `folder` and its parents that exists but is not a folder: the file in the way, if any."""
    for candidate in (folder, *folder.parents):
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return None


def check_dir(folder: Path, what: str, *, fix: str = "choose another path, or move the file away") -> None:
    """Refuse a `folder` that cannot be made because a file stands in its path; `what` names the output for
    the message (e.g. "`--out notes.txt/model.nemo`"), `fix` says what to do where the path is not the user's."""
    blocker = blocking_file(folder)
    if blocker is not None:
        raise OutputError(f"Cannot write {what}: {blocker} is a file, not a folder; {fix}.")


def make_dir(folder: Path, what: str) -> Path:
    """`check_dir`, then create `folder` (and its parents); an OS refusal (permissions, a read-only disk) is
    one sentence too."""
    check_dir(folder, what)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"Cannot write {what}: {folder} cannot be created ({exc.strerror or exc}); choose another path, or "
            "make it writable."
        ) from None
    return folder
