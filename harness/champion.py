"""The alias `champion` of a registered model: which version holds it, and when a new one takes it.

Each version records one figure: the objective's metric on the test set when the chosen trial was scored on
it, else on the validation set, with the content digest of that manifest (as `tracking.log_manifests` names
datasets). A new version takes the alias when the model has no champion yet, or when its figure strictly beats
the champion's: the same figure (same set kind, same objective) on the same manifest digest. Otherwise the
champion stays, and the version says why in one line with the call that moves the alias by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from harness.directions import Direction
from harness.objective import objective_names, objective_value
from harness.provenance import AUDIO_HASHES_FILE, manifest_file
from harness.spec import SweepSpec
from harness.tracking import DIGEST_CHARS

CHAMPION = "champion"
FIGURE_TAG, FIGURE_VALUE_TAG = "harness.figure", "harness.figure_value"
DIRECTION_TAG, DIGEST_TAG, MANIFEST_TAG = "harness.figure_direction", "harness.manifest_digest", "harness.manifest"


@dataclass(frozen=True)
class Figure:
    """The figure a version is judged by: the objective's metric (`test_wer`, `val_bleu`) on one manifest."""

    name: str
    value: float
    direction: Direction
    manifest: str
    digest: str  # the manifest's content digest (`tracking.DIGEST_CHARS` of provenance's sha256); "" if unreadable

    @property
    def split(self) -> str:
        return "test" if self.name.startswith("test_") else "validation"

    def tags(self) -> dict[str, str]:
        return {
            FIGURE_TAG: self.name,
            FIGURE_VALUE_TAG: repr(self.value),
            DIRECTION_TAG: str(self.direction),
            MANIFEST_TAG: self.manifest,
            DIGEST_TAG: self.digest,
        }

    @classmethod
    def of_tags(cls, tags: Mapping[str, str]) -> Figure | None:
        """A version's recorded figure; None for a version without one (registered by hand or by an older harness)."""
        try:
            return cls(
                tags[FIGURE_TAG],
                float(tags[FIGURE_VALUE_TAG]),
                Direction(tags[DIRECTION_TAG]),
                tags.get(MANIFEST_TAG, ""),
                tags[DIGEST_TAG],
            )
        except (KeyError, ValueError):
            return None


def decision_figure(spec: SweepSpec, final: Mapping[str, float], test: Mapping[str, float]) -> Figure | None:
    """The objective's metric on the test set (`test_*` figures of the chosen trial), else on the validation set
    (its final validation); None when neither has a value for it (no samples of the metric's kind)."""
    metric = objective_names(spec.objective)[0]
    as_validation = {f"val_{k.removeprefix('test_')}": v for k, v in test.items() if k.startswith("test_")}
    candidates = [("test", spec.data.test, as_validation), ("val", spec.data.validation, dict(final))]
    for split, manifest, figures in candidates:
        if manifest is None or not figures:
            continue
        try:
            value = objective_value(figures, spec.objective)
        except (ValueError, KeyError):
            continue
        if not math.isfinite(value):
            continue
        record = manifest_file(split, manifest, spec.state_dir / AUDIO_HASHES_FILE)
        digest = (record.sha256 or "")[:DIGEST_CHARS]
        return Figure(f"{split}_{metric}", value, spec.direction, manifest, digest)
    return None


def champion_decision(
    name: str, version: str, figure: Figure | None, champion: ModelVersion | None, uri: str
) -> tuple[bool, str]:
    """Whether version `version` (judged by `figure`) takes the alias from `champion`, and why, in one line."""
    if champion is None:
        return True, f"Version {version} of {name} is the champion: {name} had none."
    held = Figure.of_tags(champion.tags)
    by_hand = (
        f"to move it anyway: MlflowClient(tracking_uri={uri!r}, registry_uri={uri!r})"
        f".set_registered_model_alias({name!r}, {CHAMPION!r}, {version!r})"
    )
    stays = f"Version {champion.version} stays the champion of {name}"
    if figure is None:
        return False, f"{stays}: version {version} has no figure to compare (no objective value recorded); {by_hand}."
    if held is None:
        return False, f"{stays}: it records no figure to compare version {version}'s with; {by_hand}."
    if (held.name, held.direction) != (figure.name, figure.direction):
        return False, (
            f"{stays}: version {version} is judged by {figure.name}, the champion by {held.name}, which do not "
            f"compare; {by_hand}."
        )
    if held.digest != figure.digest or not figure.digest:
        return False, (
            f"{stays}: version {version}'s {figure.name} was measured on another {figure.split} manifest "
            f"({figure.manifest}, digest {figure.digest or 'unknown'}) than the champion's ({held.manifest}, digest "
            f"{held.digest or 'unknown'}), so the figures do not compare; {by_hand}."
        )
    if not figure.direction.better(figure.value, held.value):
        return False, (
            f"{stays}: version {version}'s {figure.name} {figure.value:.4f} does not beat its {held.value:.4f} on "
            f"the same {figure.split} manifest ({figure.direction.word} is better); {by_hand}."
        )
    return True, (
        f"Version {version} is the champion of {name}: its {figure.name} {figure.value:.4f} beats version "
        f"{champion.version}'s {held.value:.4f} on the same {figure.split} manifest "
        f"({figure.direction.word} is better)."
    )


def champion_version(client: MlflowClient, name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
