# The set-up commands of the README: `make demo`, `make test`, `make test-integration`,
# `make lint`. Each creates .venv if missing and installs the pinned requirements and the package.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# Transparent huge pages for XLA:CPU's per-step temporaries (m3jax/run/hugepages.py: small's
# stage-2 step 0.92x, bench_hugepages.py); read by glibc at start-up, so set here.
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1

.PHONY: demo reproduce test test-integration test-slow lint install clean tpu-venv tpu-venv-or-skip test-aot

# pip byte-compiles the installed files one at a time (half of a cached install, mostly
# TensorFlow's); compileall writes the same .pyc files on every core.
$(STAMP): requirements.txt requirements-dev.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-compile --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps -e .
	-$(PY) -m compileall -q -j 0 $(VENV)/lib > /dev/null  # a file that does not compile is pip's warning, not an error
	touch $(STAMP)

install: $(STAMP)

# Longer than the demo (about 80 minutes on 2 cores; resumable): learning curves and the
# paper's Fig. 11 comparison, written on purpose to experiments/results/reproduce/.
reproduce: $(STAMP)
	$(PY) -m m3jax reproduce --out experiments/results/reproduce

demo: $(STAMP)
	$(PY) -m m3jax demo --results experiments/results/demo.json --plots experiments/results/plots

# Unit and property tests (pyproject's default marker filter): <= 3 minutes on 2 cores.
test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile -q $(PYTEST_ARGS)

# End-to-end jobs: the demo, the sweep, the probes, trainings, the GPU script (CPU run), and
# the tests that compile many programs (scan, remat, sharding, fused kernels in interpret
# mode). tpu-venv-or-skip installs .venv-tpu (libtpu) for the AOT compile test.
test-integration: $(STAMP) tpu-venv-or-skip
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
