# Two entry points: `make demo` and `make test`. Both create .venv on a fresh machine.
# `make test-fast` is the quick lane while editing: lint, types and every test that
# starts no process (tests/conftest.py: marks and the guard that enforces them).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: demo test test-fast lint typecheck pytest pytest-fast system-deps bench bench-quick clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(DEVSTAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(STAMP)

demo: $(STAMP)
	$(BIN)/extjobs demo

# What the system tests need from the OS: OpenSSH's sshd (real nodes) and,
# when root, loop devices tooling, qemu for the kvm backend, and PostgreSQL's binaries
# for the harness's own database server.
system-deps:
	@bash .ci/system-deps

lint: $(DEVSTAMP)
	$(BIN)/ruff check extjobs tests bench
	$(BIN)/ruff format --check extjobs tests bench

typecheck: $(DEVSTAMP)
	$(BIN)/mypy extjobs

# With EXTJOBS_TEST_LANE=fast, a test not marked `spawns` that starts a process fails.
# `make test` runs the whole suite in two halves so that the guard checks the marks too.
FASTLANE := EXTJOBS_TEST_LANE=fast

pytest-fast: $(DEVSTAMP)
	$(FASTLANE) $(BIN)/pytest -m "not spawns and not slow"

pytest: $(DEVSTAMP) system-deps
	$(FASTLANE) $(BIN)/pytest -m "not spawns"
	$(BIN)/pytest -m spawns

test-fast: $(DEVSTAMP) lint typecheck pytest-fast

test: $(DEVSTAMP) system-deps lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

# Benchmarks (docs/benchmarks.md). bench-quick: about a minute, prints one JSON line
# last; bench: the full set (~20 minutes with 1,000 nodes), also redraws the docs' figures.
BENCHSTAMP := $(VENV)/.installed-bench

$(BENCHSTAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[bench]'
	touch $@ $(STAMP)

bench-quick: $(BENCHSTAMP)
	$(BIN)/python -m bench --quick

bench: $(BENCHSTAMP)
	$(BIN)/python -m bench
