"""The harness's own code: the commit of its git checkout, and whether local edits sit on top of it.

MLflow tags every run with the commit (its own guess reads `sys.argv[0]`, the console script) and the
report's provenance records both, so a number can be traced to the code that produced it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

HERE = Path(__file__).parent


def git_commit() -> str | None:
    """The checkout's commit; None outside a git checkout (an installed wheel) or without git."""
    return (_git("rev-parse", "HEAD") or "").strip() or None


def git_dirty() -> bool | None:
    """True when the checkout has uncommitted changes: its commit alone does not pin the code."""
    out = _git("status", "--porcelain", "--untracked-files=no")
    return None if out is None else bool(out.strip())


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=HERE).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
