# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv if missing and installs the pinned requirements and the package.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: demo test test-slow bench install clean tpu-venv tpu-venv-or-skip test-aot

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m m3jax demo

test: $(STAMP) tpu-venv-or-skip
	$(PY) -m pytest -n 2 --dist loadfile -q $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(TPU_VENV) .pytest_cache

# A separate virtualenv with jax[tpu] (libtpu) for ahead-of-time TPU compilation
# (`python -m m3jax compile`, tests/train/test_aot.py), so libtpu never loads into, slows
# or changes a CPU run of .venv.
TPU_VENV := .venv-tpu
TPU_PY := $(TPU_VENV)/bin/python
TPU_STAMP := $(TPU_VENV)/.installed-stamp

$(TPU_STAMP): requirements-tpu.txt pyproject.toml
	test -x $(TPU_PY) || $(PYTHON) -m venv $(TPU_VENV)
	$(TPU_PY) -m pip install --quiet --upgrade pip
	$(TPU_PY) -m pip install --quiet -r requirements-tpu.txt
	$(TPU_PY) -m pip install --quiet --no-deps -e .
	touch $(TPU_STAMP)

tpu-venv: $(TPU_STAMP)

# `make test` tries it; where libtpu has no wheel (not Linux x86_64/aarch64) the AOT test skips.
tpu-venv-or-skip:
	@$(MAKE) --no-print-directory tpu-venv || echo "make: .venv-tpu could not be installed;" \
	  "tests/train/test_aot.py will skip its TPU compile (see the pip error above)"

test-aot: $(STAMP) tpu-venv
	$(PY) -m pytest -q tests/train/test_aot.py $(PYTEST_ARGS)

# Wheels the GPU machine lacks (Python 3.12), carried in .whl/ by experiments/gpu_check.sh.
gpu-wheels:
	mkdir -p .whl
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp --platform manylinux2014_x86_64 -d .whl ml-collections==1.1.0
