"""Support code for several test modules (not a test module): an `mlflow server`, CWD and waits, study access.

Fixtures live in conftest.py; the plain functions they and the tests call live here, so that no
test module imports another.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from harness.numerics import Numerics

if TYPE_CHECKING:
    import optuna

T = TypeVar("T")

ENV_KEYS = ("HARNESS_STORAGE", "HARNESS_TRACKING_URI")
MLFLOW_SERVER_START_SECONDS = 180
CHROMIUM = Path("/usr/bin/chromium")


def free_port() -> int:
    """A loopback port nothing listens on (bound by the OS, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """Poll `predicate` every 0.5 s until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def mlflow_server(root: Path, *, host: str = "127.0.0.1", allowed_hosts: str | None = None) -> Iterator[str]:
    """`mlflow server` on a free loopback port, its SQLite store and proxied artifacts under `root`; yields its URL.

    Clients reach it over HTTP only (artifacts too), as the workers of a multi-host sweep do. The
    server forks workers, so it runs in its own process group and is stopped as a group. Another
    loopback address (`127.0.0.2`) stands for a host name: MLflow refuses it unless `allowed_hosts` names it.
    """
    root.mkdir(parents=True)
    log = root / "server.log"
    port = free_port()
    with log.open("w") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                host,
                "--port",
                str(port),
                *(["--allowed-hosts", allowed_hosts] if allowed_hosts else []),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination",
                str(root / "artifacts"),
            ],
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # no background job consumers (7 processes for GenAI jobs the harness never uses)
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
    url = f"http://{host}:{port}"

    def up() -> bool:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {server.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(up, MLFLOW_SERVER_START_SECONDS, f"mlflow server ({log})")
        yield url
    finally:
        _stop_group(server)


def _stop_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def in_project(path: Path) -> Iterator[None]:
    """CWD = `path` with no harness URIs in the environment; both restored afterwards.

    For session- and module-scoped fixtures, which cannot use the function-scoped monkeypatch."""
    cwd, saved = os.getcwd(), {k: os.environ.pop(k) for k in ENV_KEYS if k in os.environ}
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(cwd)
        os.environ.update(saved)


def load_study(spec) -> optuna.Study:
    """The sweep's Optuna study, from the storage its spec names."""
    # Imported here: conftest imports this module for every test, and optuna and harness.study (MLflow
    # behind it) take seconds to import.
    import optuna

    from harness.study import open_storage

    return optuna.load_study(study_name=spec.name, storage=open_storage(spec.storage_url))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def chromium(profile: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Headless Chromium on a fresh profile (no UI state stored by an earlier page), `args` saying what to do
    (`--screenshot=...`, `--dump-dom`) and to which URL; background network and updates off."""
    assert CHROMIUM.is_file(), (
        f"{CHROMIUM} is missing: run scripts/setup.sh as root, or `apt-get install -y chromium chromium-driver`"
    )
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    command = [str(CHROMIUM), *flags, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def ctrl_c_default() -> None:
    """`preexec_fn` for processes a test Ctrl-C's: SIGINT back to its default. A shell starts background jobs
    (`make test &`, some CI runners) with SIGINT ignored, children inherit that, and the test's Ctrl-C would be lost."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def proposals_that_run_out_of_memory(build: Callable, seed: int, *, trials: int, infeasible: bool = True) -> int:
    """A sweep of `trials` where batch_duration above 40 runs out of memory and larger batches score better up
    to there (the usual tension): how many proposals after the 4 start-up trials land where memory runs out.
    `build(seed)` makes the sampler; `infeasible`: each OOM is told as the supervisor tells it
    (`tell_out_of_memory`), otherwise as a plain FAIL (the harness's old record)."""
    import math

    import optuna

    from harness.samplers import TrialSeededSampler
    from harness.study import tell_out_of_memory

    space = {
        "lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
        "batch_duration": optuna.distributions.CategoricalDistribution([10, 20, 40, 80, 160]),
        "freeze": optuna.distributions.CategoricalDistribution(["none", "encoder"]),
    }
    study = optuna.create_study(sampler=TrialSeededSampler(build, seed))
    landed = 0
    for number in range(trials):
        trial = study.ask(space)
        size = trial.params["batch_duration"]
        if size <= 40:
            study.tell(trial, 1.0 / size + 0.02 * abs(math.log10(trial.params["lr"]) + 3))
            continue
        landed += number >= 4
        if infeasible:
            tell_out_of_memory(study, trial)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return landed


# A CPU trial's numerics as `harness.numerics` records them (test_numerics, test_reproduce).
VERSIONS = {"torch": "2.5.1", "nemo_toolkit": "3.0.0", "lightning": "2.5.0", "numpy": "1.26.4"}
CPU_TRIAL = Numerics(
    threads=1,
    omp_num_threads="1",
    mkl_num_threads=None,
    device="cpu",
    cpu="AMD EPYC 7B13",
    accelerator="cpu",
    precision="32-true",
    devices=1,
    deterministic=False,
    cudnn_deterministic=False,
    cudnn_benchmark=False,
    cublas_workspace_config=None,
    seed=300_000,
    versions=VERSIONS,
)


POSTGRES = "postgresql://postgres@127.0.0.1:5432"  # this machine's server (trust auth): the multi-host tests' storage


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, uniquely named database on this machine's PostgreSQL; dropped (connections forced out) afterwards."""
    import psycopg

    name = f"harness_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
        try:
            yield f"{POSTGRES}/{name}"
        finally:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
