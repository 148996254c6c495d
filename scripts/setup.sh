#!/usr/bin/env bash
# Set up a fresh machine: system tools for synthetic speech, a virtual environment, the harness.
# Idempotent: a second run only checks. Used by `make demo`, `make test` and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

# `setup.sh test` also needs Chromium (the HTML report is rendered headless in a test), and as root Slurm and
# munge: tests/test_slurm.py starts a single-node Slurm of its own (without root those tests skip).
packages=(espeak-ng sox)
[ "${1:-}" = test ] && packages+=(chromium chromium-driver)
[ "${1:-}" = test ] && [ "$(id -u)" = 0 ] && packages+=(slurm-wlm munge)
declare -A programs=([chromium-driver]=chromedriver [slurm-wlm]=slurmctld [munge]=munged)
missing=()
for package in "${packages[@]}"; do
    command -v "${programs[$package]:-$package}" >/dev/null || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "Installing ${missing[*]} (Debian packages) ..."
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "error: ${missing[*]} missing; install them first: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "Creating $VENV ..."
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
fi
stamp="$VENV/.harness-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    # torch first: 2.13.0 is a CPU build on CPU-only machines here and the CUDA build from PyPI on GPU boxes.
    "$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/pip" install -q "torch==2.13.0"
    echo "Installing the harness and its dependencies (NeMo, Lightning, Optuna, MLflow) ..."
    "$VENV/bin/pip" install -q -e ".[dev]"
    touch "$stamp"
fi
