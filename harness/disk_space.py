"""Telling a failed write that found no disk space from any other failure, and how much space is left.

A sweep writes to two stores and to trial folders for days; a full disk must end it with one sentence naming
the disk and the space left (`stores.full_store_text`, `sweep._disk_full`), never a traceback or a half-recorded
trial. Detection walks what Optuna, MLflow and SQLAlchemy wrap, since each re-raises the driver's error.
"""

from __future__ import annotations

import errno
import io
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path, PurePath

SQLITE_FULL = 13  # sqlite3's result code for "database or disk is full"
# How a store on a server says its disk is full (PostgreSQL, MySQL, an MLflow server's 500), where no errno travels.
NO_SPACE_TEXTS = ("database or disk is full", "No space left on device", "Disk quota exceeded")


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it wraps: Optuna and MLflow re-raise SQLAlchemy's error `from` it, which holds the
    driver's (`orig`)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [current.__cause__, current.__context__, getattr(current, "orig", None)]


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` is (or wraps) a write that failed for want of disk space: a file's ENOSPC or EDQUOT,
    SQLite's SQLITE_FULL, or a database server saying so."""
    for cause in causes(exc):
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if getattr(cause, "sqlite_errorcode", None) == SQLITE_FULL:
            return True
        if any(text in str(cause) for text in NO_SPACE_TEXTS):
            return True
    return False


def full_file(exc: BaseException) -> Path | None:
    """The file a write that found no space was writing, if the failure was a file's.

    `open()` names its file in the OSError, a failed `write()` or `close()` does not: then the innermost frame
    holding a path or an open file (pathlib's `write_text` holds both) stands for it."""
    for cause in causes(exc):
        if not (isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT)):
            continue
        if cause.filename:
            return Path(cause.filename)
        frames = []
        trace = cause.__traceback__
        while trace is not None:
            frames.append(trace.tb_frame)
            trace = trace.tb_next
        for frame in reversed(frames):
            for value in frame.f_locals.values():
                if isinstance(value, PurePath):
                    return Path(value)
                name = getattr(value, "name", None) if isinstance(value, io.IOBase) else None
                if isinstance(name, str):
                    return Path(name)
    return None


def space_left(path: Path) -> str:
    """'12 KiB free of 3.0 MiB in DIR' for the file system that holds `path` (or would: its nearest existing
    folder), as `shutil.disk_usage` sees it; an unreadable one says so."""
    folder = next((p for p in (path, *path.parents) if p.is_dir()), Path("."))
    try:
        usage = shutil.disk_usage(folder)
    except OSError as exc:
        return f"the free space in {folder} cannot be read: {exc.strerror or exc}"
    return f"{_size(usage.free)} free of {_size(usage.total)} in {folder}"


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    raise AssertionError("unreachable")


def free_bytes(path: Path | None) -> int:
    folder = next((p for p in (path, *path.parents) if p.is_dir()), None) if path is not None else None
    try:
        return shutil.disk_usage(folder).free if folder is not None else 0
    except OSError:
        return 0


class _FullDiskLogs(logging.Filter):
    """MLflow's SQL store logs every database error with its traceback before raising it; a full disk is then
    reported by the harness in one sentence (`disk_full`), so that page is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return error is None or not disk_full(error)


_MLFLOW_DB_LOGGER = "mlflow.store.db.utils"


def quiet_full_disk_logs() -> None:
    logger = logging.getLogger(_MLFLOW_DB_LOGGER)
    if not any(isinstance(f, _FullDiskLogs) for f in logger.filters):
        logger.addFilter(_FullDiskLogs())
