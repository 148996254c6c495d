"""Where a sweep's pretrained checkpoint comes from: registry name, Hugging Face id or `.nemo` path.

The sweep resolves the model once, in the supervisor, to a local `.nemo` file; trials only ever
see that path, so a hundred trials never touch the network.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from harness.errors import ModelError

ASSETS = "harness.assets"

# Short names users type -> Hugging Face ids; `canary-tiny` is the packaged small twin.
REGISTRY = {
    "canary-180m": "nvidia/canary-180m-flash",
    "canary-180m-flash": "nvidia/canary-180m-flash",
    "canary-1b-flash": "nvidia/canary-1b-flash",
    "canary-1b-v2": "nvidia/canary-1b-v2",
    "canary-1b": "nvidia/canary-1b",
}
PACKAGED = ("canary-tiny", "canary-tiny-v1", "canary-tiny-v2")  # small twins shipped in harness/assets


def packaged_model(name: str) -> Path:
    """Path of a small twin shipped inside the package."""
    return Path(str(resources.files(ASSETS).joinpath(f"{name}.nemo")))


def resolve_model(model: str) -> Path:
    """Return a local `.nemo` for `model`, or a ModelError that says how to pass one."""
    if model in PACKAGED:
        path = packaged_model(model)
        if not path.is_file():
            raise ModelError(
                f"The packaged model {model} is missing at {path}; rebuild it with "
                f"`python -m tools.twins --name {model} --out {path}` from a source checkout."
            )
        return path
    if model.endswith(".nemo") or "/" not in model and model not in REGISTRY:
        path = Path(model).expanduser()
        if path.is_file():
            return path.resolve()
        known = ", ".join([*PACKAGED, *REGISTRY])
        raise ModelError(
            f"Model {model!r} is neither a known name ({known}) nor an existing .nemo file; "
            "set `model:` in the sweep spec to one of those or to a .nemo path."
        )
    return _from_hugging_face(REGISTRY.get(model, model))


def _from_hugging_face(repo_id: str) -> Path:
    """Find the repo's `.nemo` in the local HF cache, downloading it only when the hub is reachable."""
    from huggingface_hub import snapshot_download

    errors = []
    for local_only in (True, False):
        try:
            folder = Path(snapshot_download(repo_id, allow_patterns=["*.nemo"], local_files_only=local_only))
        except Exception as exc:  # noqa: BLE001 - offline, gated, unknown repo: all mean "no file"
            errors.append(type(exc).__name__)
            continue
        found = sorted(folder.glob("*.nemo"))
        if found:
            return found[0]
    raise ModelError(
        f"Could not get {repo_id} from the Hugging Face hub ({', '.join(errors)}); on an offline machine, "
        f"download {repo_id.split('/')[-1]}.nemo elsewhere and set `model: /path/to/"
        f"{repo_id.split('/')[-1]}.nemo` in the sweep spec."
    )
