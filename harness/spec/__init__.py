"""Sweep specs: `sweeps/<name>.yaml`, validated into typed dataclasses.

Every key is checked against the dataclass that owns it, so a typo (`max_step`) or a wrong type
(`trials: six`) is an error naming the file and the dotted key instead of a silently ignored
setting in a sweep that runs for days. Values that load with the right type but would stop or break
every trial (numbers out of range, an unknown accelerator, a behaviour name MLflow refuses in metric
names) are refused on load too (`check_values`).

`_schema` holds the dataclasses and the stores a process uses (`store_uris`), `_loading` reads the YAML,
`_values` checks the values; callers import from `harness.spec` only.
"""

from harness.spec._loading import (
    build,
    is_spec_path,
    known_sweeps,
    load_spec,
    project_path,
    read_yaml,
    spec_candidates,
)
from harness.spec._schema import (
    STATE_DIR,
    BehaviourSpec,
    BudgetSpec,
    ConfirmSpec,
    DataSpec,
    ObjectiveSpec,
    RegistrySpec,
    SweepSpec,
    TrackingSpec,
    TrainingSpec,
    default_storage,
    store_uris,
)
from harness.spec._values import check_values, registry_name_problem

__all__ = [
    "STATE_DIR",
    "BehaviourSpec",
    "BudgetSpec",
    "ConfirmSpec",
    "DataSpec",
    "ObjectiveSpec",
    "RegistrySpec",
    "SweepSpec",
    "TrackingSpec",
    "TrainingSpec",
    "build",
    "check_values",
    "default_storage",
    "is_spec_path",
    "known_sweeps",
    "load_spec",
    "project_path",
    "read_yaml",
    "registry_name_problem",
    "spec_candidates",
    "store_uris",
]
