"""What a trial's figures depend on besides its params, seed and data: its numerics fingerprint.

The same params and seed give the same figures only with the same floating-point path: torch's intra-op
thread count (a sum split over more threads adds in another order), the device, the precision, the
deterministic-algorithm settings on a GPU and the library versions. The trial process records them
(`collect`, in its `Result` and then its `TrialRecord`); `harness reproduce` re-creates the thread count
(`recreate_env`, `Job.threads`) and names, before it trains, each recorded difference it cannot re-create
(`cannot_recreate`). Collecting imports torch; the rest of this module does not (the supervisor reads it).
Run as `python -m harness.numerics '<training spec as JSON>' <seed> [threads]` it prints the fingerprint a trial
process would have under this environment (`probe`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.spec import TrainingSpec

CPU = "cpu"
PACKAGES = ("torch", "nemo_toolkit", "lightning", "numpy")  # whose kernels and defaults make the figures
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
RECREATED = ("threads", "omp_num_threads", "mkl_num_threads", "seed")  # what `harness reproduce` sets as recorded


@dataclass(frozen=True)
class Numerics:
    """One trial process's numerics: everything its figures depend on besides params, seed-driven order and data."""

    threads: int  # torch.get_num_threads() in the trial process: intra-op threads actually used
    omp_num_threads: str | None  # OMP_NUM_THREADS in its environment (the slot's), None when unset
    mkl_num_threads: str | None
    device: str  # `cpu`, or the CUDA device's name (`NVIDIA H200`)
    cpu: str  # the CPU model: kernels are chosen per instruction set
    accelerator: str  # `training.accelerator` as set (`auto`, `cpu`, `gpu`)
    precision: str  # as resolved (`32-true`, `bf16-mixed`)
    devices: int  # ranks per trial (DDP)
    deterministic: bool  # torch's deterministic algorithms, not warn-only (Lightning's `deterministic=True`)
    cudnn_deterministic: bool
    cudnn_benchmark: bool
    cublas_workspace_config: str | None
    seed: int
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def on_gpu(self) -> bool:
        return self.device != CPU

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, stored: dict[str, Any] | None) -> Numerics | None:
        """A stored fingerprint (a `Result`'s or a `TrialRecord`'s), None when none was recorded (an older
        harness) or it lacks a field; keys this harness does not know are ignored."""
        names = {f.name for f in fields(cls)}
        if not stored or not names <= set(stored):
            return None
        return cls(**{k: v for k, v in stored.items() if k in names})


def collect(training: TrainingSpec, seed: int) -> Numerics:
    """This process's fingerprint (the trial process, after its Trainer set the global torch flags)."""
    import torch

    from harness.provenance import cpu_model
    from harness.training import resolve_precision, uses_cuda

    return Numerics(
        threads=torch.get_num_threads(),
        omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
        mkl_num_threads=os.environ.get("MKL_NUM_THREADS"),
        device=torch.cuda.get_device_name(0) if uses_cuda(training) else CPU,
        cpu=cpu_model(),
        accelerator=training.accelerator,
        precision=resolve_precision(training),
        devices=training.devices,
        deterministic=torch.are_deterministic_algorithms_enabled()
        and not torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn_deterministic=bool(torch.backends.cudnn.deterministic),
        cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
        cublas_workspace_config=os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        seed=seed,
        versions=versions(),
    )


def versions() -> dict[str, str]:
    from harness.provenance import installed_versions

    return installed_versions(PACKAGES)


def probe(training: TrainingSpec, seed: int, env: dict[str, str], threads: int | None = None) -> Numerics | None:
    """The fingerprint a trial process would have here under `env` (and `Job.threads`), from a child process (the
    supervisor never imports torch); None when the child fails (a broken GPU driver: the trial process says more)."""
    settings = {"accelerator": training.accelerator, "precision": training.precision, "devices": training.devices}
    args = [json.dumps(settings), str(seed), *([str(threads)] if threads else [])]
    child = subprocess.run(
        [sys.executable, "-m", "harness.numerics", *args],
        capture_output=True,
        text=True,
        env=env,
    )
    lines = child.stdout.strip().splitlines()
    if child.returncode != 0 or not lines:
        return None
    try:
        return Numerics.of(json.loads(lines[-1]))
    except ValueError:
        return None


def recreate_env(recorded: Numerics) -> dict[str, str | None]:
    """The thread variables a reproduction's process gets (None: unset there), so its threads are the trial's."""
    return {"OMP_NUM_THREADS": str(recorded.threads), "MKL_NUM_THREADS": recorded.mkl_num_threads}


@dataclass(frozen=True)
class Difference:
    """One field whose value differs between two fingerprints."""

    name: str  # the field (`threads`, `device`, ...), `versions.<package>` for a library
    recorded: Any
    here: Any
    changes_figures: bool  # whether it changes figures on the recorded device
    recreated: bool  # `harness reproduce` sets it as recorded

    def text(self) -> str:
        return f"{self.name} {self.recorded} -> {self.here}"


def differences(recorded: Numerics, here: Numerics) -> list[Difference]:
    """Every field that differs, each marked with whether it changes figures and whether reproduce re-creates it.

    Threads and the CPU model change figures on a CPU; the deterministic settings on a GPU; the device,
    precision, ranks, seed and library versions anywhere. The thread variables and the accelerator as set
    do not by themselves (the threads torch used and the device carry them)."""
    cpu_only = {"threads", "cpu"}
    gpu_only = {"deterministic", "cudnn_deterministic", "cudnn_benchmark", "cublas_workspace_config"}
    quiet = {"omp_num_threads", "mkl_num_threads", "accelerator"}
    found = []
    for f in fields(Numerics):
        if f.name == "versions":
            continue
        a, b = getattr(recorded, f.name), getattr(here, f.name)
        if a != b:
            changes = f.name not in quiet and (
                (f.name not in cpu_only or not recorded.on_gpu) and (f.name not in gpu_only or recorded.on_gpu)
            )
            found.append(Difference(f.name, a, b, changes, f.name in RECREATED))
    for name in sorted(set(recorded.versions) | set(here.versions)):
        a, b = recorded.versions.get(name), here.versions.get(name)
        if a != b:
            found.append(Difference(f"versions.{name}", a, b, True, False))
    return found


def unrepeatable(recorded: Numerics) -> str | None:
    """Why a recorded run cannot be repeated exactly even on the same machine, or None: a GPU run without
    deterministic algorithms (cuDNN/cuBLAS kernels, atomics, and NCCL's all-reduce under DDP vary)."""
    if not recorded.on_gpu or (recorded.deterministic and not recorded.cudnn_benchmark):
        return None
    reduce = " and NCCL all-reduce order" if recorded.devices > 1 else ""
    return f"it trained on a GPU without deterministic algorithms (cuDNN/cuBLAS kernel choice, atomics{reduce} vary)"


def cannot_recreate(recorded: Numerics, here: Numerics | None) -> list[str]:
    """Before a reproduction: one phrase per difference from this machine (`here`, None: unknown) that changes
    figures and that a reproduction cannot re-create (it sets threads and seed as recorded), and why a
    recorded GPU run cannot be repeated exactly at all. Empty: the figures should be the recorded ones."""
    return _notes(recorded, [] if here is None else differences(recorded, here), skip_recreated=True)


def figure_changes(recorded: Numerics, ran: Numerics) -> list[str]:
    """After a reproduction: every difference between the recorded numerics and those it `ran` with that
    changes figures (threads too, should re-creating them have failed), and a GPU run's unrepeatable reason."""
    return _notes(recorded, differences(recorded, ran), skip_recreated=False)


def _notes(recorded: Numerics, found: list[Difference], *, skip_recreated: bool) -> list[str]:
    notes = [d.text() for d in found if d.changes_figures and not (skip_recreated and d.recreated)]
    reason = unrepeatable(recorded)
    return [*notes, reason] if reason else notes


def main(argv: list[str]) -> int:
    """The `probe` child: the fingerprint under this environment, as one JSON line."""
    import torch

    from harness.spec import TrainingSpec

    if len(argv) > 2:  # as the trial process does with `Job.threads`
        torch.set_num_threads(int(argv[2]))
    numerics = collect(TrainingSpec(**json.loads(argv[0])), int(argv[1]))
    print(json.dumps(numerics.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
