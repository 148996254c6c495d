"""Where the recipe reads and writes: the source checkout it runs in."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # tools/twins/paths.py -> the checkout
DEFAULT_WORK_DIR = REPO_ROOT / "build"  # corpora, tokenizers and metrics of a build
ASSETS_DIR = REPO_ROOT / "harness" / "assets"  # where the packaged `.nemo` twins live
