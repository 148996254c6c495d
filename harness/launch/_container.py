"""What a worker job's container must see: its files at the same paths as where `harness launch` runs.

With `launch.container_image` the job's command runs inside a pyxis/enroot container that sees only the
image and `launch.container_mounts` (`SRC:DST[:FLAGS]`, pyxis's `--container-mounts`). The script `cd`s into
the checkout (the project directory: the sweep spec, the search space, `mlruns/`) and submitit reads its
pickled call and writes its result in the log folder, by their paths on this machine; the worker reads the
manifests by theirs. A path is visible when a mount covers it at the same path (`/shared:/shared` covers
`/shared/proj`); a mount to another path (`/lustre/u:/work`) would show it elsewhere, which the job's paths
do not follow. Anything else is refused before submitting, naming the paths and the mount that would fix it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from harness.errors import LaunchError
from harness.spec import SweepSpec


def check_container_paths(spec: SweepSpec, *, checkout: Path, log_dir: Path) -> None:
    """Refuse a container job that could not reach the checkout, its log folder or the sweep's inputs."""
    launch = spec.launch
    if not launch.container_image:
        return
    mounts = [_mount(text) for text in launch.container_mounts]
    needed = {
        "the checkout (the job `cd`s into it)": checkout,
        "the jobs' log folder (`launch.log_dir`)": log_dir,
        "the sweep spec": Path(spec.source),
        "the search space": Path(spec.search_space),
        **{f"`data.{key}`": Path(path) for key, path in _manifests(spec)},
    }
    unseen = {what: path for what, path in needed.items() if not any(_covers(mount, path) for mount in mounts)}
    if not unseen:
        return
    inside = checkout.absolute() if checkout in unseen.values() else None  # mounting it shows what lies inside
    named = [
        f"{what} {path.absolute()}{_elsewhere(mounts, path)}"
        for what, path in unseen.items()
        if path == checkout or inside is None or not path.absolute().is_relative_to(inside)
    ]
    add = ", ".join(f"{folder}:{folder}" for folder in _folders(unseen.values(), dirs=(checkout, log_dir)))
    raise LaunchError(
        f"The worker jobs' container ({launch.container_image}) would not see {', '.join(named)}: "
        f"`launch.container_mounts` ({', '.join(launch.container_mounts) or 'none'}) mounts none of them at the "
        f"same path. Add {add} to `launch.container_mounts`, or run `harness launch` from a checkout on a mounted "
        "filesystem with the data there too."
    )


def _mount(text: str) -> tuple[Path, Path]:
    """`SRC:DST[:FLAGS]` (or `SRC` alone: the same path) as (source, destination)."""
    parts = text.split(":")
    source = Path(parts[0])
    return source, Path(parts[1]) if len(parts) > 1 and parts[1] else source


def _covers(mount: tuple[Path, Path], path: Path) -> bool:
    """The mount shows `path` at the same path inside the container (symbolic links followed on both sides)."""
    source, destination = mount
    if source != destination:
        return False
    sources = {source, source.resolve()}
    return any(p.is_relative_to(s) for p in (path.absolute(), path.resolve()) for s in sources)


def _elsewhere(mounts: list[tuple[Path, Path]], path: Path) -> str:
    """A note when a mount shows the path at another place in the container."""
    for source, destination in mounts:
        if source != destination and path.resolve().is_relative_to(source.resolve()):
            return f" (mounted at {destination / path.resolve().relative_to(source.resolve())}, not at its own path)"
    return ""


def _folders(paths: Iterable[Path], *, dirs: tuple[Path, ...]) -> list[Path]:
    """The folders to suggest mounting: each path's folder (the path itself for `dirs`), none inside another."""
    folders = {(path if path in dirs else path.parent).absolute() for path in paths}
    return sorted(f for f in folders if not any(f != other and f.is_relative_to(other) for other in folders))


def _manifests(spec: SweepSpec) -> list[tuple[str, str]]:
    data = spec.data
    pairs = [("train", data.train), ("validation", data.validation), ("test", data.test)]
    pairs += [(f"retention[{index}]", path) for index, path in enumerate(data.retention)]
    pairs += [(f"replay[{index}]", path) for index, path in enumerate(data.replay)]
    return [(key, path) for key, path in pairs if path]
