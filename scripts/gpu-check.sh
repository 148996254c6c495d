#!/usr/bin/env bash
# The GPU check: the `gpu` tests (tests/test_gpu.py: a bf16-mixed trial, a real CUDA out-of-memory, 2-GPU DDP per
# freeze mode) and the side-by-side benchmarks (harness vs bare NeMo, same batches) on CUDA, then ONE summary.
# Sized for 8 minutes on one H200: set-up 1-2 min, tests ~3 min, benchmarks ~3 min. Each step has its own time
# limit and gets at most what is left of the whole budget (GPU_CHECK_SECONDS, default 480); the summary prints
# whatever happened, also when a step fails or runs out of time. Exit status 0 only when every step passed.
#
#   scripts/gpu-check.sh    # `scripts/setup.sh` makes the .venv (as for `make test`), then the check runs in it
#   GPU_CHECK_PYTHON=python3 scripts/gpu-check.sh    # an interpreter with the harness installed (a NeMo container)
#   GPU_CHECK_LOGS=DIR      # where the logs go (default mlruns/gpu-check/<UTC time>)
set -euo pipefail
cd "$(dirname "$0")/.."

BUDGET=${GPU_CHECK_SECONDS:-480}
STARTED=$(date +%s)
DEADLINE=$((STARTED + BUDGET))
LOGS=${GPU_CHECK_LOGS:-mlruns/gpu-check/$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$LOGS"
PY=${GPU_CHECK_PYTHON:-${VENV:-.venv}/bin/python}
STEPS=()
declare -A STATUS TOOK

# run_step NAME LIMIT COMMAND...: COMMAND with its output in $LOGS/NAME.log, stopped (with its whole process
# group, trial processes included) after LIMIT seconds or when the budget runs out, whichever comes first.
run_step() {
    local name=$1 cap=$2 left code=0 start
    shift 2
    STEPS+=("$name")
    left=$((DEADLINE - $(date +%s) - 20))  # a stopped step takes up to 20 s more: records, then the SIGKILL grace
    if ((left < 30)); then
        STATUS[$name]="not run: the ${BUDGET} s budget is spent"
        return 1
    fi
    ((cap < left)) || cap=$left
    start=$(date +%s)
    timeout --kill-after=15 "$cap" "$@" >"$LOGS/$name.log" 2>&1 || code=$?
    TOOK[$name]=$(($(date +%s) - start))
    case $code in
        0) STATUS[$name]=ok ;;
        124 | 137) STATUS[$name]="timed out after $cap s" ;;
        *) STATUS[$name]="failed (exit $code)" ;;
    esac
    return "$code"
}

skip_step() {  # skip_step NAME WHY
    STEPS+=("$1")
    STATUS[$1]="not run: $2"
}

# The set-up step: the venv (unless GPU_CHECK_PYTHON names an interpreter; no Chromium: no test here renders
# HTML), then the harness imports and torch sees CUDA; prints torch's version, its CUDA and the devices it sees.
# Run by `timeout`, so a script of its own, expanded when it runs.
# shellcheck disable=SC2016
SETUP='[ -n "${GPU_CHECK_PYTHON:-}" ] || scripts/setup.sh
"$PY" -c "import harness, pytest, torch
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"devices\", torch.cuda.device_count())
assert torch.cuda.is_available(), \"this torch sees no CUDA device (a CPU build, or no driver)\""'
export PY GPU_CHECK_PYTHON

# One line per test from pytest's JUnit XML; fails when a GPU is there but no test passed (all skipped).
test_lines() {
    local xml=$LOGS/tests.xml
    if [ ! -f "$xml" ]; then  # pytest was stopped: its -v lines say how far it got
        echo "  (no JUnit report; from tests.log:)"
        grep -E ' (PASSED|FAILED|SKIPPED|ERROR)' "$LOGS/tests.log" | sed 's/^/  /' || true
        return 0
    fi
    python3 - "$xml" "$GPUS" <<'EOF'
import sys, xml.etree.ElementTree as ET
passed = 0
for case in ET.parse(sys.argv[1]).iter("testcase"):
    outcome, why = "passed", ""
    for kind, name in (("failure", "FAILED"), ("error", "ERROR"), ("skipped", "skipped")):
        found = case.find(kind)
        if found is not None:
            outcome, why = name, found.get("message", "")
    passed += outcome == "passed"
    why = " ".join(why.split())[:150]
    print(f"  {case.get('name'):<80} {outcome:<7} {float(case.get('time', 0)):6.1f} s  {why}".rstrip())
if int(sys.argv[2]) and not passed:
    print("  no GPU test passed although nvidia-smi shows a GPU: read the skip reasons above")
    sys.exit(1)
EOF
}

summary_lines() {
    local name commit
    if commit=$(git rev-parse --short HEAD 2>/dev/null); then
        git diff --quiet HEAD || commit+=" with local edits"
    else
        commit="no git checkout"
    fi
    echo "== GPU check summary: $commit, $(date -u '+%Y-%m-%d %H:%M UTC'), $(($(date +%s) - STARTED)) s of $BUDGET"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader | sed 's/^/GPU /'
    else
        echo "GPU: none (nvidia-smi not found)"
    fi
    grep -h '^torch ' "$LOGS/setup.log" 2>/dev/null | sed 's/^/    /' || true
    for name in "${STEPS[@]}"; do
        printf '%-11s %-44s %s\n' "$name" "${STATUS[$name]}" "${TOOK[$name]:+${TOOK[$name]} s}"
        if [[ ${STATUS[$name]} != ok* ]]; then
            FAILED=1
            [ -s "$LOGS/$name.log" ] && tail -n 1 "$LOGS/$name.log" | cut -c 1-200 | sed 's/^/  last line: /'
        fi
        case $name in
            tests) [ -z "${TOOK[tests]:-}" ] || test_lines || FAILED=1 ;;
            overhead | throughput) grep -h '^RESULT' "$LOGS/$name.log" 2>/dev/null | sed 's/^/  /' || true ;;
        esac
    done
    echo "logs: $LOGS/"
}

summary() {
    local code=$?
    FAILED=0
    summary_lines >"$LOGS/summary.txt" 2>&1 || FAILED=1
    echo
    cat "$LOGS/summary.txt"
    ((code != 0)) || code=$FAILED
    exit "$code"
}
trap summary EXIT

GPUS=$( (nvidia-smi --list-gpus 2>/dev/null || true) | grep -c '^GPU' || true)
if run_step setup 150 bash -c "$SETUP"; then
    # The side-by-side benchmarks train on the demo data (synthesised once, about a minute on many cores).
    if [ -f data/demo/train.json ]; then
        STEPS+=(data) STATUS[data]="ok (already there)"
    else
        run_step data 120 "$PY" -m harness demo-data || true
    fi
    run_step tests 210 "$PY" -m pytest -m gpu tests/test_gpu.py -v -p no:cacheprovider \
        --junitxml="$LOGS/tests.xml" || true
    if [ -f data/demo/train.json ]; then
        # Sizes that fit: 2 pairs each (the full runs take 3); on an H100 a 200-step trial took 25-27 s.
        run_step overhead 150 "$PY" -m benchmarks.overhead --steps 200 --repetitions 2 || true
        run_step throughput 120 "$PY" -m benchmarks.throughput --steps 100 --repetitions 2 || true
    else
        skip_step overhead "no demo data (data/demo)"
        skip_step throughput "no demo data (data/demo)"
    fi
else
    for name in tests overhead throughput; do skip_step "$name" "set-up failed (see $LOGS/setup.log)"; done
fi
