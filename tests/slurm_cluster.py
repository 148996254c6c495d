"""A real single-node Slurm for tests/test_slurm.py: munged, slurmctld and slurmd on this host (not a test module).

Debian's `slurm-wlm` and `munge` (`scripts/setup.sh test` installs them). Everything lives in a fresh folder
under /tmp (config, munge key and socket, state, spool, logs), and the daemons listen on free ports, so a
cluster a killed earlier run left behind neither collides with this one nor is touched by it. The daemons
run in the foreground as this process's children and die with it (`die_with_parent`); `slurm_cluster` stops
them, after cancelling its jobs, on the way out. `SLURM_CONF` names the config for the Slurm commands (and
for `harness launch`, which runs them).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from harness.stopping import die_with_parent
from tests.helpers import free_port, wait_for

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "sinfo", "squeue", "scancel")
PARTITION = "harness"
MAX_MINUTES = 30  # the partition's MaxTime: `launch.time_minutes` above it is refused
UP_SECONDS = 60
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")


def missing() -> str | None:
    """Why a Slurm can't be started here, or None."""
    if os.geteuid() != 0:
        return "a Slurm of its own needs root (slurmd as root, munged as user munge)"
    absent = [name for name in PROGRAMS if shutil.which(name) is None]
    try:
        pwd.getpwnam("munge")
    except KeyError:
        absent.append("user munge")
    if absent:
        return f"slurm-wlm and munge are not installed ({', '.join(absent)} missing): run scripts/setup.sh test"
    return None


@dataclass
class SlurmCluster:
    """A running single-node cluster: its config, its one partition and node, and how long it took to start."""

    root: Path
    conf: Path
    node: str
    cpus: int
    memory_mb: int
    up_seconds: float

    partition = PARTITION
    max_minutes = MAX_MINUTES

    def run(self, *argv: str, check: bool = True) -> str:
        """A Slurm command on this cluster; its output."""
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=120, env={**os.environ, "SLURM_CONF": str(self.conf)}
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr or done.stdout}")
        return done.stdout

    def jobs(self, job_id: str) -> list[dict[str, str]]:
        """`scontrol show job` of a job (each task of an array); kept for 5 minutes after it ends (MinJobAge)."""
        out = self.run("scontrol", "show", "job", "--oneliner", job_id, check=False)
        return [
            dict(f.split("=", 1) for f in line.split() if "=" in f) for line in out.splitlines() if "JobId=" in line
        ]

    def states(self, job_id: str) -> list[str]:
        return [job["JobState"] for job in self.jobs(job_id)]

    def wait_ended(self, job_id: str, timeout: float) -> list[str]:
        """Wait until every task of the job has ended; their states."""

        def ended() -> list[str]:
            states = self.states(job_id)
            return states if states and all(state in ENDED for state in states) else []

        return wait_for(ended, timeout, f"Slurm job {job_id} to end ({self.root / 'log'})")

    def cancel_all(self) -> None:
        """Cancel every job of this cluster and wait until their processes have ended."""
        self.run("scancel", "--partition", PARTITION, check=False)
        wait_for(lambda: not self.run("squeue", "--noheader", check=False).strip(), 90, "the jobs to end")

    def down_conf(self) -> Path:
        """This cluster's config with the controller on a port nothing listens on: a controller that is down."""
        conf = self.root / "down.conf"
        text = self.conf.read_text().replace(f"SlurmctldPort={self._port()}", f"SlurmctldPort={free_port()}")
        conf.write_text(text)
        return conf

    def _port(self) -> str:
        return next(
            line.split("=", 1)[1] for line in self.conf.read_text().splitlines() if line.startswith("SlurmctldPort=")
        )


@contextmanager
def slurm_cluster() -> Iterator[SlurmCluster]:
    """Start munged, slurmctld and slurmd; yield once `sinfo` shows the node idle; stop them all afterwards."""
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="harness-slurm-"))
    root.chmod(0o755)  # munged runs as user munge and must reach its folder
    (root / "log").mkdir()
    daemons: list[subprocess.Popen[bytes]] = []
    try:
        munge = _munge_dir(root)
        daemons.append(_start(root, "munged", ["munged", "--foreground", "--force", *_munge_args(munge)], user="munge"))
        wait_for(lambda: (munge / "munge.socket").exists(), UP_SECONDS, f"munged ({munge / 'munged.log'})")
        node_line = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
        node = dict(f.split("=", 1) for f in node_line.split())
        conf = _write_conf(root, node_line, node["NodeName"], munge / "munge.socket")
        daemons.append(_start(root, "slurmctld", ["slurmctld", "-D", "-f", str(conf)]))
        daemons.append(_start(root, "slurmd", ["slurmd", "-D", "-f", str(conf)]))
        cluster = SlurmCluster(root, conf, node["NodeName"], int(node["CPUs"]), int(node["RealMemory"]), 0.0)

        def idle() -> bool:
            for daemon in daemons:
                if daemon.poll() is not None:
                    raise RuntimeError(f"{daemon.args!r} exited {daemon.returncode}: {_tail(root / 'log')}")
            return (
                cluster.run("sinfo", "--noheader", "--nodes", cluster.node, "--format", "%T", check=False).strip()
                == "idle"
            )

        wait_for(idle, UP_SECONDS, f"the Slurm node to be idle ({root / 'log'})")
        cluster.up_seconds = time.monotonic() - started
        yield cluster
        with suppress(Exception):
            cluster.cancel_all()
    finally:
        for daemon in reversed(daemons):
            _stop(daemon)
        shutil.rmtree(root, ignore_errors=True)


def _munge_dir(root: Path) -> Path:
    """munged's folder, owned by munge, with a new key (munged refuses a key others can read)."""
    munge = root / "munge"
    munge.mkdir(mode=0o711)
    key = munge / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    entry = pwd.getpwnam("munge")
    for path in (munge, key):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return munge


def _munge_args(munge: Path) -> list[str]:
    files = {"socket": "munge.socket", "key-file": "munge.key", "log-file": "munged.log"}
    files |= {"pid-file": "munged.pid", "seed-file": "munged.seed"}
    return [f"--{option}={munge / name}" for option, name in files.items()]


def _write_conf(root: Path, node_line: str, node: str, munge_socket: Path) -> Path:
    """A slurm.conf for this host: one node (as `slurmd -C` describes it), one partition with a MaxTime.

    CPUs are the consumable (`CR_CPU`): two 1-CPU jobs share the node, whatever memory they leave."""
    for folder in ("state", "spool"):
        (root / folder).mkdir()
    settings = {
        "ClusterName": "harness",
        "SlurmctldHost": f"{node}(127.0.0.1)",
        "SlurmctldPort": free_port(),
        "SlurmdPort": free_port(),
        "SlurmUser": "root",
        "SlurmdUser": "root",
        "AuthType": "auth/munge",
        "AuthInfo": f"socket={munge_socket}",
        "CredType": "cred/munge",
        "StateSaveLocation": root / "state",
        "SlurmdSpoolDir": root / "spool",
        "SlurmctldPidFile": root / "slurmctld.pid",
        "SlurmdPidFile": root / "slurmd.pid",
        "SlurmctldLogFile": root / "log" / "slurmctld.log",
        "SlurmdLogFile": root / "log" / "slurmd.log",
        "SelectType": "select/cons_tres",
        "SelectTypeParameters": "CR_CPU",
        "ProctrackType": "proctrack/linuxproc",
        "TaskPlugin": "task/none",
        "JobAcctGatherType": "jobacct_gather/none",
        "MpiDefault": "none",
        "ReturnToService": 2,
    }
    lines = [f"{key}={value}" for key, value in settings.items()]
    lines.append(f"{node_line} NodeAddr=127.0.0.1 State=UNKNOWN")
    lines.append(f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime={MAX_MINUTES} State=UP")
    conf = root / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _start(root: Path, name: str, argv: list[str], *, user: str | None = None) -> subprocess.Popen[bytes]:
    """A daemon in the foreground, in its own session (a terminal's Ctrl-C is the tests' own), dying with us."""
    with (root / "log" / f"{name}.out").open("w") as out:
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, user=user, start_new_session=True, preexec_fn=die_with_parent
        )


def _stop(daemon: subprocess.Popen[bytes]) -> None:
    if daemon.poll() is None:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def _tail(folder: Path) -> str:
    return " | ".join(f"{p.name}: {p.read_text(errors='replace')[-800:]}" for p in sorted(folder.glob("*")))
