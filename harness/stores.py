"""Opening a sweep's stores (Optuna storage, MLflow tracking) so that any failure is one sentence.

A sweep runs for days on stores whose address a user typed: a refused port, a garbage file or a
`mlruns` that is a file must fail in seconds, naming the store and the fix, not after minutes of
retries as a 100-line traceback. Fresh SQLite files are opened under an inter-process lock,
because MLflow's and Optuna's schema creation race when several processes meet a new file.
"""

from __future__ import annotations

import contextlib
import fcntl
import random
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import sqlalchemy
from sqlalchemy.exc import SQLAlchemyError

from harness.disk_space import causes, disk_full, free_bytes, full_file, quiet_full_disk_logs, space_left
from harness.errors import HarnessError, StoreError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

T = TypeVar("T")

CONNECT_TIMEOUT_S = 10  # a network store that does not answer within this stops the sweep's start
SQLITE_HEADER = b"SQLite format 3\x00"
STORAGE_SETTING = "`storage:` in the sweep spec, `--storage` or $HARNESS_STORAGE"
TRACKING_SETTING = "`tracking.uri` in the sweep spec, `--tracking-uri` or $HARNESS_TRACKING_URI"
OPTUNA_STORE = "Optuna storage"
MLFLOW_STORE = "MLflow tracking store"


def redact(url: str) -> str:
    """Store URLs may carry passwords; messages and MLflow tags must not."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def store_name(url: str) -> str:
    """How messages name a store: the file for SQLite, the redacted URL otherwise."""
    path = sqlite_path(url)
    return str(path) if path is not None else redact(url)


def sqlite_path(url: str) -> Path | None:
    """The file behind a `sqlite:///` URL; None for servers and in-memory databases."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def reason(exc: BaseException) -> str:
    """The first line of what the driver said (SQLAlchemy wraps it in a page of SQL and links)."""
    inner = getattr(exc, "orig", None) or exc
    text = getattr(inner, "message", None) or str(inner) or type(inner).__name__
    return text.strip().splitlines()[0][:300] if text.strip() else type(inner).__name__


def check_state_dir(path: Path) -> None:
    """`mlruns/` holds the databases and trial dirs: it must be a directory, or not exist yet."""
    for candidate in (path, *path.parents):
        if candidate.exists() and not candidate.is_dir():
            raise StoreError(
                f"{candidate} is a file, but the harness keeps its databases and trial dirs in the directory "
                f"{path}: move the file away (or run from another directory)."
            )


def ensure_state_dir(path: Path) -> None:
    check_state_dir(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"Cannot create {path} ({reason(exc)}): make it writable or run elsewhere.") from None


def check_sqlite_file(path: Path, store: str, setting: str) -> None:
    """A present file must be an SQLite database; its directory must be a directory."""
    check_state_dir(path.parent)
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not the {store}'s SQLite file: move it away, or fix {setting}.")
    if not path.exists():
        return
    with path.open("rb") as handle:
        head = handle.read(len(SQLITE_HEADER))
    if head and head != SQLITE_HEADER:
        raise StoreError(
            f"{path} is not an SQLite database, so it cannot be the {store}: restore it from a backup, or move it "
            f"away and start the sweep under a new name (or set {setting} to another store)."
        )


@contextlib.contextmanager
def creation_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `<db>.lock` while this process opens (and perhaps creates) an SQLite store.

    Where no lock file can be written (a read-only copy of `mlruns/`) nothing is created either,
    so the store is opened without one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle = path.with_name(path.name + ".lock").open("a")
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def out_of_space(store: str, url: str, setting: str) -> str:
    """The first half of the one sentence a full store gets: which store, how much space is left, the fix."""
    path = sqlite_path(url)
    where = space_left(path) if path is not None else "on its server: free space there"
    return (
        f"The {store} {store_name(url)} is out of disk space ({where}): free space there or move the store to a "
        f"bigger disk ({setting})"
    )


def full_disk_text(exc: BaseException) -> str:
    """One sentence for a full disk met outside a sweep's own handling (which names the store: `full_store_text`)."""
    file = full_file(exc)
    if file is not None:
        return f"The disk under {file} is full ({space_left(file)}): free space there, then run the same command."
    return f"A store ran out of disk space ({reason(exc)}): free space on its disk, then run the same command."


def full_store_text(exc: BaseException, *, storage_url: str, tracking_uri: str) -> str:
    """`out_of_space` for whichever store (or file) a disk-full failure in a sweep came from.

    A file's ENOSPC names its file. Optuna wraps the driver's error in StorageInternalError, MLflow in
    MlflowException; a bare driver error goes to the SQLite store with less space left."""
    file = full_file(exc)
    if file is not None:
        return f"The disk under {file} is full ({space_left(file)}): free space there"
    chain = list(causes(exc))
    if any(mlflow_error(c) for c in chain):
        return out_of_space(MLFLOW_STORE, tracking_uri, TRACKING_SETTING)
    if any(type(c).__module__.startswith("optuna") for c in chain):
        return out_of_space(OPTUNA_STORE, storage_url, STORAGE_SETTING)
    paths = {url: sqlite_path(url) for url in (storage_url, tracking_uri)}
    if all(paths.values()):
        emptier = min(paths, key=lambda url: free_bytes(paths[url]))
        if emptier == tracking_uri:
            return out_of_space(MLFLOW_STORE, tracking_uri, TRACKING_SETTING)
    return out_of_space(OPTUNA_STORE, storage_url, STORAGE_SETTING)


def mlflow_error(exc: BaseException) -> bool:
    """An MLflow exception, told without importing MLflow (seconds; `harness status` never needs it): a process
    that never imported it cannot have met one."""
    module = sys.modules.get("mlflow.exceptions")
    return module is not None and isinstance(exc, module.MlflowException)


@contextlib.contextmanager
def reported(store: str, url: str, setting: str) -> Iterator[None]:
    """Turn a store's failure (driver, MLflow, file system) into one sentence naming the store; a full disk
    whatever wraps it (Optuna's StorageInternalError too), with the space left."""
    try:
        yield
    except HarnessError:
        raise
    except Exception as exc:
        if disk_full(exc):
            raise StoreError(f"{out_of_space(store, url, setting)}, then run the same command.") from None
        if not (isinstance(exc, SQLAlchemyError | OSError) or mlflow_error(exc)):
            raise
        if mlflow_error(exc) and HOST_REFUSED in str(exc):
            raise StoreError(host_refused(url)) from None
        raise StoreError(
            f"The {store} {redact(url)} failed: {reason(exc)}. Check that it is the right store and reachable "
            f"({setting})."
        ) from None


def engine_kwargs(url: str) -> dict:
    """SQLite waits for locks instead of failing; network databases give up connecting after a timeout."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 120}}
    kwargs: dict = {"pool_pre_ping": True}
    if url.startswith(("postgresql", "mysql")):
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return kwargs


def probe_database(url: str) -> None:
    """Connect once: an unreachable server is a message in seconds, not retries and a traceback."""
    try:
        engine = sqlalchemy.create_engine(url, **engine_kwargs(url))
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise StoreError(
            f"The {OPTUNA_STORE} URL {redact(url)} is not usable ({reason(exc)}): fix {STORAGE_SETTING}."
        ) from None
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as exc:
        raise StoreError(
            f"Cannot connect to the {OPTUNA_STORE} {redact(url)} ({reason(exc)}): make sure the database server "
            f"runs and the database exists, or fix {STORAGE_SETTING}."
        ) from None
    finally:
        engine.dispose()


def open_database(url: str, build: Callable[[], T], *, attempts: int = 5) -> T:
    """Build an Optuna RDB storage: under the file lock for SQLite, retried on schema races otherwise.

    Workers on several hosts may meet a fresh server database together; a failed schema creation
    is retried once the other worker has finished it.
    """
    path = sqlite_path(url)
    if path is not None:
        check_sqlite_file(path, OPTUNA_STORE, STORAGE_SETTING)
        with reported(OPTUNA_STORE, url, STORAGE_SETTING), creation_lock(path):
            return build()
    probe_database(url)
    for attempt in range(attempts):
        try:
            return build()
        except SQLAlchemyError:
            if attempt == attempts - 1:
                with reported(OPTUNA_STORE, url, STORAGE_SETTING):
                    raise
            time.sleep(1 + attempt + random.random())
    raise AssertionError("unreachable")


HOST_REFUSED = "Invalid Host header"  # MLflow 3's answer (403) to a Host name not in --allowed-hosts


def host_refused(uri: str) -> str:
    """The fix for MLflow's DNS-rebinding guard: it answers 403 to any Host header it was not told about."""
    host = urllib.parse.urlsplit(uri).netloc.rsplit("@", 1)[-1]
    return (
        f"The MLflow tracking server {redact(uri)} refused the host name {host!r} (403 {HOST_REFUSED}): "
        f"MLflow 3 answers only requests addressed to localhost or private-network IPs unless told otherwise. "
        f'Start it with `--allowed-hosts "{host},localhost:*"` (every name workers use, with its port or `:*`), '
        f"or reach it by an allowed name ({TRACKING_SETTING})."
    )


def probe_tracking_server(uri: str) -> None:
    """Any HTTP answer will do, except MLflow refusing our Host header: MLflow's client retries a refused
    port for minutes before it says so, and `/health` is exempt from the Host check, so one API path is asked."""
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=CONNECT_TIMEOUT_S).close()
        urllib.request.urlopen(
            uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1", timeout=CONNECT_TIMEOUT_S
        ).close()
    except urllib.error.HTTPError as exc:
        if exc.code == 403 and HOST_REFUSED in exc.read(2000).decode(errors="replace"):
            raise StoreError(host_refused(uri)) from None
        return  # it answered (an auth wall, a proxy's 404): MLflow's own calls say what is wrong
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLError):
            return  # TLS settings are MLflow's business (MLFLOW_TRACKING_INSECURE_TLS, ...)
        why = reason(exc.reason) if isinstance(exc.reason, BaseException) else str(exc.reason)
        raise StoreError(
            f"Cannot reach the MLflow tracking server {redact(uri)} ({why}): start it or fix {TRACKING_SETTING}."
        ) from None
    except (TimeoutError, OSError) as exc:
        raise StoreError(
            f"Cannot reach the MLflow tracking server {redact(uri)} ({reason(exc) or 'no answer'} within "
            f"{CONNECT_TIMEOUT_S} s): start it or fix {TRACKING_SETTING}."
        ) from None


def open_mlflow(uri: str) -> MlflowClient:
    """An MLflow client whose store is known to be reachable (a server) or a sane file (SQLite)."""
    from mlflow.tracking import MlflowClient  # here: importing MLflow takes seconds, which readers of a study skip

    quiet_full_disk_logs()
    path = sqlite_path(uri)
    if uri.startswith(("http://", "https://")):
        probe_tracking_server(uri)
    if path is None:
        with reported(MLFLOW_STORE, uri, TRACKING_SETTING):
            return MlflowClient(tracking_uri=uri)
    check_sqlite_file(path, MLFLOW_STORE, TRACKING_SETTING)
    # MlflowClient creates the schema of a new file; the first process does it, the others wait.
    with reported(MLFLOW_STORE, uri, TRACKING_SETTING), creation_lock(path):
        return MlflowClient(tracking_uri=uri)
