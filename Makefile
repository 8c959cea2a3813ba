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
