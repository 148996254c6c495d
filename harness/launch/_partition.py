"""What a Slurm partition offers (`scontrol show partition`, `sinfo`), and a request it cannot satisfy refused.

Slurm takes a job that asks for more than any node of its partition has (CPUs, GPUs, memory) or for longer
than the partition's `MaxTime`, and leaves it pending for ever (reason `PartitionConfig`,
`PartitionTimeLimit`, ...) unless the cluster sets `EnforcePartLimits`. `harness launch` asks first, and
names the `launch.*` key, what it asks and what the partition offers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from harness.errors import LaunchError
from harness.spec import SweepSpec

DEFAULT_CPUS_PER_WORKER = 8  # `launch.cpus_per_worker` unset: this many, or a node's worth where nodes have fewer
SLURM_ANSWER_SECONDS = 60  # a controller that has not answered by then is down for `harness launch`
MB_PER_GB = 1024  # Slurm's `--mem=64GB` is 64 * 1024 MB, its RealMemory is in MB
COMMANDS = ("sbatch", "srun", "scontrol", "sinfo")


@dataclass(frozen=True)
class Node:
    """One node of the partition, as `sinfo -N` lists it."""

    name: str
    cpus: int
    memory_mb: int
    gpus: int

    def describe(self) -> str:
        return f"{self.name}: {self.cpus} CPUs, {self.gpus} GPUs, {self.memory_mb / MB_PER_GB:.0f} GB"


@dataclass(frozen=True)
class Partition:
    """The limits of one partition that decide whether a worker job can ever start."""

    name: str
    state: str  # UP, DOWN, DRAIN, INACTIVE
    max_minutes: int | None  # `MaxTime`; None: UNLIMITED
    max_cpus_per_node: int | None  # `MaxCPUsPerNode`; None: UNLIMITED
    max_memory_mb: int | None  # `MaxMemPerNode`; None: UNLIMITED
    nodes: tuple[Node, ...]

    def cpus(self, node: Node) -> int:
        """The CPUs one job may take on `node` in this partition."""
        return min(node.cpus, self.max_cpus_per_node or node.cpus)

    def memory_mb(self, node: Node) -> int:
        return min(node.memory_mb, self.max_memory_mb or node.memory_mb)


def require_slurm_commands() -> None:
    """The Slurm commands `harness launch` runs, on this machine's PATH."""
    missing = [name for name in COMMANDS if shutil.which(name) is None]
    if missing:
        raise LaunchError(
            f"No {', '.join(f'`{name}`' for name in missing)} on this machine's PATH: run `harness launch` on a "
            "Slurm login node (`harness launch --dry-run` prints the job script anywhere)."
        )


def read_partition(name: str | None) -> Partition:
    """The named partition, or the cluster's default one (`launch.partition: null`), and its nodes."""
    lines = _slurm(["scontrol", "show", "partition", "--oneliner"]).splitlines()
    partitions = [_key_values(line) for line in lines if line.startswith("PartitionName=")]
    names = ", ".join(f["PartitionName"] for f in partitions) or "none"
    chosen = [f for f in partitions if (f["PartitionName"] == name if name else f.get("Default") == "YES")]
    if not chosen and name:
        raise LaunchError(f"`launch.partition` is {name!r}, which this cluster does not have: use one of {names}.")
    if not chosen:
        raise LaunchError(
            "`launch.partition` is not set and this cluster has no default partition: set `launch.partition` "
            f"(or `--partition`) to one of {names}."
        )
    found = chosen[0]
    return Partition(
        name=found["PartitionName"],
        state=found.get("State", "UP"),
        max_minutes=_minutes(found.get("MaxTime", "UNLIMITED")),
        max_cpus_per_node=_limit(found.get("MaxCPUsPerNode", "UNLIMITED")),
        max_memory_mb=_limit(found.get("MaxMemPerNode", "UNLIMITED")),
        nodes=tuple(_nodes(found["PartitionName"])),
    )


def worker_cpus(spec: SweepSpec, partition: Partition | None) -> int:
    """CPUs per worker job: `launch.cpus_per_worker`, else the default capped at what one node of the partition
    (with the job's GPUs and memory) can give a job; a request too big is refused by `check_request`."""
    launch = spec.launch
    if launch.cpus_per_worker is not None:
        return launch.cpus_per_worker
    if partition is None:  # a dry run, which asks Slurm nothing
        return DEFAULT_CPUS_PER_WORKER
    most = max((partition.cpus(node) for node in _fitting(spec, partition, cpus=1)), default=DEFAULT_CPUS_PER_WORKER)
    return min(DEFAULT_CPUS_PER_WORKER, most)


def check_request(spec: SweepSpec, partition: Partition, *, cpus: int) -> None:
    """Refuse a worker job the partition can never start, naming the key, the request and the offer."""
    launch = spec.launch
    where = f"Slurm partition {partition.name}"
    if partition.state != "UP":
        raise LaunchError(
            f"{where} is {partition.state}: it starts no jobs. Choose another with `launch.partition` (see `sinfo`)."
        )
    if partition.max_minutes is not None and launch.time_minutes > partition.max_minutes:
        raise LaunchError(
            f"`launch.time_minutes` is {launch.time_minutes}, but {where} allows at most {partition.max_minutes} "
            "minutes per job (MaxTime): set `launch.time_minutes` (or `--time-minutes`) to "
            f"{partition.max_minutes} or less; workers resume the study where the last ones stopped."
        )
    if not partition.nodes:
        raise LaunchError(f"{where} has no nodes (`sinfo -p {partition.name}` lists none).")
    asks = [
        ("launch.cpus_per_worker", cpus, "CPUs", lambda n: partition.cpus(n)),
        ("launch.gpus_per_worker", launch.gpus_per_worker, "GPUs", lambda n: n.gpus),
    ]
    if launch.mem_gb is not None:
        asks.append(("launch.mem_gb", launch.mem_gb, "GB", lambda n: partition.memory_mb(n) // MB_PER_GB))
    for key, asked, unit, offered in asks:
        most = max(offered(node) for node in partition.nodes)
        if asked > most:
            fix = f"{most} or less" if most else "0 (CPU workers)"
            raise LaunchError(
                f"`{key}` is {asked}, but no node of {where} has more than {most} {unit} for one job "
                f"(scontrol/sinfo), so the jobs would pend for ever: set `{key}` to {fix}, "
                "or choose another partition with `launch.partition`."
            )
    if not _fitting(spec, partition, cpus=cpus):
        raise LaunchError(
            f"No node of {where} has {cpus} CPUs, {launch.gpus_per_worker} GPUs"
            f"{f' and {launch.mem_gb} GB' if launch.mem_gb else ''} together "
            f"({'; '.join(node.describe() for node in partition.nodes[:5])}), so the jobs would pend for ever: "
            "lower `launch.cpus_per_worker`, `launch.gpus_per_worker` or `launch.mem_gb`."
        )


def _fitting(spec: SweepSpec, partition: Partition, *, cpus: int) -> list[Node]:
    """The nodes that can hold one worker job (`cpus` CPUs, its GPUs, its memory)."""
    launch = spec.launch
    memory = (launch.mem_gb or 0) * MB_PER_GB
    return [
        node
        for node in partition.nodes
        if partition.cpus(node) >= cpus and node.gpus >= launch.gpus_per_worker and partition.memory_mb(node) >= memory
    ]


def _nodes(partition: str) -> list[Node]:
    """Each node of the partition once: name, CPUs, memory (MB) and GPUs (generic resources `gpu`)."""
    text = _slurm(["sinfo", "--Node", "--noheader", "--partition", partition, "--format", "%N|%c|%m|%G"])
    nodes: dict[str, Node] = {}
    for line in text.splitlines():
        name, cpus, memory, gres = (line.strip().split("|") + ["", "", ""])[:4]
        if name and cpus.isdigit():
            memory_mb = int(memory.rstrip("+")) if memory.rstrip("+").isdigit() else 0
            nodes[name] = Node(name, int(cpus), memory_mb, _gpus(gres))
    return list(nodes.values())


def _gpus(gres: str) -> int:
    """GPUs in a `Gres` field: `gpu:8`, `gpu:a100:4(S:0-1)`, several types summed; `(null)`: none."""
    plain = re.sub(r"\([^)]*\)", "", gres)
    return sum(int(m.group(1)) for m in re.finditer(r"(?:^|,)gpu(?::[^:,]+)?:(\d+)", plain))


def _key_values(line: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in line.split() if "=" in item)


def _limit(value: str) -> int | None:
    return int(value) if value.isdigit() else None


def _minutes(value: str) -> int | None:
    """Slurm's time format (`UNLIMITED`, `30`, `30:00`, `04:00:00`, `2-00:00:00`) in whole minutes, rounded up."""
    if not value[:1].isdigit():
        return None
    days, _, clock = value.rpartition("-")
    parts = [int(part) for part in clock.split(":")]
    if days:  # days-hours[:minutes[:seconds]]
        hours, minutes, seconds = (parts + [0, 0])[:3]
    else:  # minutes, minutes:seconds or hours:minutes:seconds
        hours, minutes, seconds = ([0] * (3 - len(parts)) + parts) if len(parts) == 3 else (0, *(parts + [0])[:2])
    return (int(days or 0) * 24 + hours) * 60 + minutes + (seconds > 0)


def _slurm(argv: list[str]) -> str:
    """Run a Slurm query; a controller that is down or unreachable is one line naming the command."""
    command = " ".join(argv[:3])
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=SLURM_ANSWER_SECONDS)
    except subprocess.TimeoutExpired:
        raise LaunchError(
            f"The Slurm controller did not answer `{command}` within {SLURM_ANSWER_SECONDS} s: check it with "
            "`sinfo` (or ask the cluster's admins); nothing was submitted."
        ) from None
    if done.returncode != 0:
        said = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise LaunchError(
            f"`{command}` failed: {said[-1] if said else f'exit status {done.returncode}'}. Is the Slurm controller "
            "up and this a login node of the cluster (`sinfo`)? Nothing was submitted."
        )
    return done.stdout
