"""The alias `champion` of a registered model: which version holds it, and when a new one takes it.

Each version records one figure: the objective's metric on the test set when the chosen trial was scored on
it, else on the validation set, with the content digest of that manifest (as `tracking.log_manifests` names
datasets), and the predictions behind it (an artifact of its registration run). A new version takes the alias
when the model has no champion yet, or when its figure beats the champion's beyond its interval: the same figure
(same set kind, same objective) on the same manifest digest, and the paired bootstrap interval of the difference
over that manifest's lines (`intervals.compare`) excludes 0 on the better side. A better figure whose interval
includes 0 could be the next seed's luck: the champion stays, and the version says why in one line with the
interval and the call that moves the alias by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from harness.directions import Direction
from harness.errors import DataError
from harness.intervals import Interval, compare_files
from harness.names import TEST_DIR
from harness.objective import objective_names, objective_value
from harness.provenance import AUDIO_HASHES_FILE, manifest_file
from harness.spec import SweepSpec
from harness.tracking import DIGEST_CHARS
from harness.trial_dir import TrialDir

CHAMPION = "champion"
FIGURE_TAG, FIGURE_VALUE_TAG = "harness.figure", "harness.figure_value"
DIRECTION_TAG, DIGEST_TAG, MANIFEST_TAG = "harness.figure_direction", "harness.manifest_digest", "harness.manifest"
PREDICTIONS_TAG = "harness.figure_predictions"  # the artifact path, on the version's run, of its figure's predictions
PREDICTIONS_FOLDER = "figure"


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


def figure_predictions(spec: SweepSpec, number: int, figure: Figure | None) -> Path | None:
    """The predictions file behind trial `number`'s figure: its test run's, or its own last validation's."""
    if figure is None:
        return None
    path = TrialDir.of(spec, TEST_DIR if figure.split == "test" else number).predictions
    return path if path.is_file() else None


def held_predictions(client: MlflowClient, champion: ModelVersion | None, into: Path) -> Path | None:
    """The champion's predictions behind its figure, downloaded into `into`; None when it recorded none."""
    artifact = (champion.tags or {}).get(PREDICTIONS_TAG) if champion else None
    if not artifact or champion is None or not champion.run_id:
        return None
    try:
        return Path(client.download_artifacts(champion.run_id, artifact, str(into)))
    except (MlflowException, OSError):
        return None


def figure_interval(figure: Figure | None, new: Path | None, held: Path | None, seed: int) -> Interval | None:
    """The new version's figure minus the champion's, with its paired 95% interval over the manifest's lines;
    None without both predictions files, or for a figure intervals do not cover (`mix`)."""
    if figure is None or new is None or held is None:
        return None
    try:
        return compare_files(held, new, seed=seed).get(figure.name.split("_", 1)[1])
    except DataError:
        return None


def champion_decision(
    name: str, version: str, figure: Figure | None, champion: ModelVersion | None, uri: str, interval: Interval | None
) -> tuple[bool, str]:
    """Whether version `version` (judged by `figure`, `interval` against the champion's) takes the alias from
    `champion`, and why, in one line."""
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
    if interval is None:
        return False, (
            f"{stays}: version {version}'s {figure.name} {figure.value:.4f} beats its {held.value:.4f}, but without "
            f"both versions' predictions (or for {figure.name}) there is no interval to say it is beyond noise; "
            f"{by_hand}."
        )
    sign = figure.direction.sign
    if max(sign * interval.low, sign * interval.high) >= 0:
        return False, (
            f"{stays}: version {version}'s {figure.name} {figure.value:.4f} beats its {held.value:.4f} on the same "
            f"{figure.split} manifest, but not beyond the interval ({interval.text}, 95%, {interval.lines} lines); "
            f"{by_hand}."
        )
    return True, (
        f"Version {version} is the champion of {name}: its {figure.name} {figure.value:.4f} beats version "
        f"{champion.version}'s {held.value:.4f} on the same {figure.split} manifest beyond the interval "
        f"({interval.text}, 95%, {interval.lines} lines; {figure.direction.word} is better)."
    )


def champion_version(client: MlflowClient, name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
