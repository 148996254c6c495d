"""The kinds of block a report page is made of: the content modules build them, the renderers draw them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Text:
    """A paragraph; `backticks` become code in both renderings."""

    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Code:
    text: str
    lang: str = ""


@dataclass
class Image:
    """A drawn figure (a skipped one becomes Text saying why)."""

    title: str
    path: Path
    size: tuple[int, int]


Block = Heading | Text | Table | Code | Image
