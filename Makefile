# Two commands for users: `make demo` (set up, synthesise data, run the demo sweep) and `make test`.
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup demo test test-extended report twin

setup:
	@scripts/setup.sh

# Two CPU slots of one thread each: canary-tiny trains as fast on one core as on two, so two trials at once
# halve the demo's time on a 2-core machine.
demo: setup
	$(BIN)/harness demo-data
	$(BIN)/harness sweep canary-tiny --workers 2

report: setup
	$(BIN)/harness report canary-tiny

test:
	@scripts/setup.sh test
	$(BIN)/ruff check .
	$(BIN)/mypy
	@# The Python 3.12 venv installs (mostly downloading) while the main suite runs; its subset runs after.
	@scripts/test-python.sh 3.12 --install-only > .venv-py3.12.log 2>&1 & installing=$$!; \
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup; suite=$$?; \
	wait $$installing || { cat .venv-py3.12.log; exit 1; }; \
	[ $$suite -eq 0 ] && scripts/test-python.sh 3.12

# End-to-end runs that train many trials (roughly 30 minutes on 2 CPU cores, not measured as a whole), beyond
# `make test`'s budget: the behaviour-learning sweep, local workers, pareto, reproduce, the v1/v2 twins, trials
# that all fail alike, repeat proposals, 2-rank DDP trials, seed confirmation and the retention limit end to end,
# replay and merges end to end, `harness status` on a running sweep, the real-Slurm launches (array, scancel,
# time limit, requeue), the benchmark smokes.
test-extended: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup -m extended

# Rebuild the packaged canary-tiny twin from its recipe (about 10 minutes on 2 CPU cores).
twin: setup
	$(BIN)/python -m tools.twins --name canary-tiny --out harness/assets/canary-tiny.nemo
