"""Which way is better, for every figure and every objective: the one rule the report, the study and the pruners read.

WERs (as written and normalised) and losses fall as a model improves; BLEU rises. A figure's name is
`[best_|final_][val_|retention_|test_]<figure>[/<group>]`, the group a language pair (`/en-de`) or a behaviour
state (`/answer_on`), so the direction comes from `<figure>` alone: `retention_bleu/answer_on` is a BLEU. The
figure `objective` goes the study's way, which `objective_directions` derives from `objective.metric`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a spec reads its directions without loading Optuna
    from optuna.study import StudyDirection

PREFIXES = ("best_", "final_", "val_", "retention_", "test_")
OBJECTIVE = "objective"


class Direction(str, enum.Enum):
    """Minimise or maximise. A `Direction` is the string Optuna, the study's definition and MLflow take
    (`"minimize"`, `"maximize"`), and prints as one."""

    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of(cls, direction: StudyDirection) -> Direction:
        """Optuna's `StudyDirection` (a study's `directions`) as a `Direction`."""
        return cls[direction.name]

    @property
    def sign(self) -> int:
        """1 or -1: sorting by `sign * value` puts the best value first."""
        return 1 if self is Direction.MINIMIZE else -1

    @property
    def word(self) -> str:
        """`lower` or `higher`: which values are better, as a report's column says it."""
        return "lower" if self is Direction.MINIMIZE else "higher"

    def better(self, a: float, b: float | None) -> bool:
        """True when `a` strictly beats `b`; anything beats no value yet (`b=None`)."""
        return b is None or self.sign * a < self.sign * b

    def best(self, values: Iterable[float]) -> float:
        return min(values) if self is Direction.MINIMIZE else max(values)

    def worst(self, values: Iterable[float]) -> float:
        return max(values) if self is Direction.MINIMIZE else min(values)


FIGURES = {
    "wer": Direction.MINIMIZE,
    "wer_normalized": Direction.MINIMIZE,
    "loss": Direction.MINIMIZE,
    "bleu": Direction.MAXIMIZE,
}


def objective_directions(metric: str, *, retention: bool = False) -> list[Direction]:
    """One direction per objective of `objective.metric`: `pareto` minimises WER and maximises BLEU, `mix`
    (WER minus weighted BLEU) is minimised; `retention` (`objective.pareto_retention`) adds the retention WER's."""
    if metric == "pareto":
        directions = [Direction.MINIMIZE, Direction.MAXIMIZE]
    else:
        directions = [Direction.MAXIMIZE if metric == "bleu" else Direction.MINIMIZE]
    return [*directions, Direction.MINIMIZE] if retention else directions


def figure_direction(name: str, objective: Direction | None = None) -> Direction:
    """The direction of figure `name` (`val_wer/en-en`, `best_val_bleu`, `retention_bleu/answer_on`); the
    figure `objective` (`best_objective`) goes `objective`'s way. An unknown figure is an error, not a guess."""
    figure = name.split("/", 1)[0]
    while figure.startswith(PREFIXES):
        figure = figure.split("_", 1)[1]
    if figure == OBJECTIVE and objective is not None:
        return objective
    if figure not in FIGURES:
        raise ValueError(f"no direction for the figure {name!r}")
    return FIGURES[figure]
