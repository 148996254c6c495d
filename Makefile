# Two commands for users: `make demo` (set up, synthesise data, run the demo sweep) and `make test`.
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup demo test report twin

setup:
	@scripts/setup.sh

demo: setup
	$(BIN)/harness demo-data
	$(BIN)/harness sweep canary-tiny

report: setup
	$(BIN)/harness report canary-tiny

test:
	@scripts/setup.sh test
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup
	@scripts/test-python.sh 3.12

# Rebuild the packaged canary-tiny twin from its recipe (about 10 minutes on 2 CPU cores).
twin: setup
	$(BIN)/python -m tools.twins --name canary-tiny --out harness/assets/canary-tiny.nemo
