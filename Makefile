# The set-up commands of the README: `make demo`, `make test`, `make test-integration`,
# `make lint`. Each creates .venv if missing and installs the pinned requirements and the package.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: demo test test-integration test-slow lint install clean

$(STAMP): requirements.txt requirements-dev.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m m3jax demo --results experiments/results/demo.json --plots experiments/results/plots

# Unit and property tests (pyproject's default marker filter): <= 3 minutes on 2 cores.
test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile -q $(PYTEST_ARGS)

# End-to-end jobs: the demo, the sweep, the probes, trainings, the GPU script (CPU run).
test-integration: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile -q -m "integration or slow" $(PYTEST_ARGS)

# The longest of them only (the full demo, the notebook).
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

# Layering (import-linter contracts in pyproject.toml), lint, format, types.
lint: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache

# Wheels the GPU machine lacks (Python 3.12), carried in .whl/ by experiments/gpu_check.sh.
gpu-wheels:
	mkdir -p .whl
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp --platform manylinux2014_x86_64 -d .whl ml-collections==1.1.0
