# Two entry points: `make demo` and `make test`. Both create .venv on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: demo test lint typecheck pytest system-deps bench bench-quick clean

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
# when root, loop devices tooling and qemu for the kvm backend.
system-deps:
	@bash .ci/system-deps

lint: $(DEVSTAMP)
	$(BIN)/ruff check extjobs tests bench
	$(BIN)/ruff format --check extjobs tests bench

typecheck: $(DEVSTAMP)
	$(BIN)/mypy extjobs

pytest: $(DEVSTAMP) system-deps
	$(BIN)/pytest

test: $(DEVSTAMP) system-deps lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

# Benchmarks (docs/benchmarks.md). bench-quick: about a minute, prints one JSON line
# last; bench: the full set (under 10 minutes), also redraws the docs' figures.
BENCHSTAMP := $(VENV)/.installed-bench

$(BENCHSTAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[bench]'
	touch $@ $(STAMP)

bench-quick: $(BENCHSTAMP)
	$(BIN)/python -m bench --quick

bench: $(BENCHSTAMP)
	$(BIN)/python -m bench
