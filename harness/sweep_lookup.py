"""Which sweep a name or a path means, for the verbs that read one (`status`, `report`, `export`, `reproduce`).

`harness sweep path/to/x.yaml` names its study `x`, and every supervisor records the spec's file on the study
(`names.SPEC_FILE_ATTR`, relative to the project root). So `x` means `sweeps/x.yaml` when that file exists, else
the file the study `x` recorded, found in the stores a spec-less command would use (`--storage`,
$HARNESS_STORAGE, `mlruns/optuna.db`). Where the spec found and the spec the study ran from are different files,
one warning line says so; nothing is guessed silently. Reading a study here takes no lock and writes nothing
(`read_study`), so `harness status` can poll a running sweep.
"""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
from optuna.pruners import NopPruner
from optuna.samplers import RandomSampler
from optuna.storages import RDBStorage

from harness.errors import SpecError
from harness.names import SPEC_FILE_ATTR
from harness.spec import (
    SweepSpec,
    default_storage,
    is_spec_path,
    known_sweeps,
    load_spec,
    project_path,
    spec_candidates,
)
from harness.stores import OPTUNA_STORE, STORAGE_SETTING, engine_kwargs, reported, sqlite_path, store_name


def read_study(url: str, name: str) -> optuna.Study | None:
    """The study `name` in the Optuna storage `url`, to read only: no creation lock (a sweep may hold it), no
    schema created, no pruner built, nothing asked. None when the storage or the study does not exist."""
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        return None
    with reported(OPTUNA_STORE, url, STORAGE_SETTING):
        storage = RDBStorage(url, engine_kwargs=engine_kwargs(url), skip_table_creation=True)
        try:
            return optuna.load_study(study_name=name, storage=storage, pruner=NopPruner(), sampler=RandomSampler())
        except KeyError:
            return None


def find_sweep(name_or_path: str, *, storage: str | None = None, tracking_uri: str | None = None) -> SweepSpec:
    """The spec of the sweep `name_or_path` names (see the module's docstring), its stores fixed (`storage` and
    `tracking_uri`: the command line's, if any). An error naming every place looked in when there is none."""
    found = next((c for c in spec_candidates(name_or_path) if c.is_file()), None)
    if found is None and is_spec_path(name_or_path):
        raise SpecError(
            f"No sweep spec {name_or_path}: check the path, or name the sweep (`{Path(name_or_path).stem}`)."
        )
    spec = load_spec(str(found) if found is not None else _recorded_file(name_or_path, storage or default_storage()))
    spec.use_stores(storage=storage, tracking_uri=tracking_uri)
    if found is not None:
        _warn_if_other_file(spec)
    return spec


def _recorded_file(name: str, url: str) -> str:
    """The spec file the study `name` in storage `url` recorded; an error saying what was looked for."""
    study = read_study(url, name)
    looked = f"no {spec_candidates(name)[0]} (known sweeps: {known_sweeps()})"
    if study is None:
        path = sqlite_path(url)
        held = "does not exist" if path is not None and not path.is_file() else "holds no study of that name"
        raise SpecError(
            f"No sweep {name!r}: {looked}, and the {OPTUNA_STORE} {store_name(url)} {held}. Run from the project "
            f"root, pass the spec's path, or name the storage the sweep ran on ($HARNESS_STORAGE; `harness status` "
            f"also takes `--storage`)."
        )
    recorded = study.user_attrs.get(SPEC_FILE_ATTR)
    if not recorded:
        raise SpecError(
            f"Sweep {name!r}: {looked}, and its study in {store_name(url)} records no spec file (it was started by "
            f"an older harness): pass the spec's path (e.g. `path/to/{name}.yaml`)."
        )
    if not Path(recorded).is_file():
        raise SpecError(
            f"Sweep {name!r} ran from {recorded}, which is not there (looked from {Path.cwd()}): run from the "
            f"project root, or pass the spec's path if it moved."
        )
    return recorded


def _warn_if_other_file(spec: SweepSpec) -> None:
    """A spec found by its file whose study ran from another file of the same name: say which is read."""
    study = read_study(spec.storage_url, spec.name)
    recorded = study.user_attrs.get(SPEC_FILE_ATTR) if study is not None else None
    if recorded and recorded != project_path(spec.source):
        print(
            f"warning: sweep {spec.name!r} last ran from {recorded}; reading it with {spec.source} "
            f"(pass {recorded} to use that one).",
            file=sys.stderr,
        )
