#!/usr/bin/env bash
# The harness on a second Python (default 3.12, as in recent NeMo containers): a fresh venv installs
# it from scratch and a short subset passes (spec, preflight, one real trial). Part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${1:-3.12}
INSTALL_ONLY=${2:-}  # `--install-only`: make test installs while the main suite runs, then runs the subset
PYTHON=$(command -v "python$VERSION" 2>/dev/null || true)
if ! "${PYTHON:-false}" -c "" 2>/dev/null && command -v pyenv >/dev/null; then
    # pyenv's shim answers only for its global versions; ask it for the installed one by name.
    release=$(pyenv versions --bare | grep -E "^$VERSION(\.[0-9]+)?$" | tail -1 || true)
    [ -n "$release" ] && PYTHON="$(pyenv root)/versions/$release/bin/python$VERSION"
fi
if ! "${PYTHON:-false}" -c "" 2>/dev/null; then
    echo "error: Python $VERSION not found; install it (e.g. pyenv install $VERSION) or run scripts/test-python.sh X.Y" >&2
    exit 1
fi
VENV=.venv-py$VERSION
if [ ! -f "$VENV/.harness-installed" ] || [ pyproject.toml -nt "$VENV/.harness-installed" ]; then
    # uv (from the main venv's dev tools) installs the ~6 GB of a CUDA torch build in a fraction of pip's time:
    # the CPU build on this disk is for the main venv's Python only.
    echo "Installing the harness into $VENV (Python $VERSION) ..."
    .venv/bin/uv venv -q --allow-existing -p "$PYTHON" "$VENV"
    VIRTUAL_ENV=$VENV .venv/bin/uv pip install -q "torch==2.13.0" -e ".[dev]"
    touch "$VENV/.harness-installed"
fi
[ "$INSTALL_ONLY" = --install-only ] && exit 0
echo "Python $VERSION subset ($("$VENV/bin/python" --version)) ..."
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_spec.py \
    "tests/test_preflight.py::test_missing_manifest" "tests/test_sweep.py::test_pruned_trial_is_killed_in_mlflow_and_stops_early"
