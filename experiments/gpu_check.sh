#!/usr/bin/env bash
# One prepared GPU check (issue 6): ceilings, decode, training and memory benchmarks on a
# paper-shaped model at reduced depth, JSON to $OUT. Fits in ~8 minutes on one H100/H200.
#
#   bash experiments/gpu_check.sh            # on the GPU machine (OUT set by the device tool)
#   bash experiments/gpu_check.sh --tiny     # CPU smoke run at a tiny size (tests/test_gpu_check.py)
#
# The GPU machine has Python 3.12 with jax, flax, optax, orbax and tensorstore but no
# ml_collections, seqio or scann: wheels for what is missing travel in .whl/ (fill it
# with `make gpu-wheels`); the benchmarks fall back to exact search without scann.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-gpu}
OUT=${OUT:-experiments/results/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ "$MODE" = "--tiny" ] && PY=.venv/bin/python
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2

if ! $PY -c "import ml_collections" 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
  else
    echo "ml_collections is missing and .whl/ holds no wheels: run 'make gpu-wheels' first" >&2
    exit 1
  fi
fi
export PYTHONPATH=.:${PYTHONPATH:-}
$PY -c "import jax; print('jax', jax.__version__, jax.devices())"

if [ "$MODE" = "--tiny" ]; then
  CFG=configs/memory3.py:tiny
  SHAPE=()
  DECODE=(--batch 2 --prompt-len 32 --new-tokens 32 --num-refs 32 --runs 2)
  TRAIN=(--steps 2 --batch 2)
  CEIL=(--size 256 --copy-gib 0.01)
  MEMORY=(--tiny)
else
  # The paper's width and heads (d=3200, H=40, H_kv=8, d_h=80, vocab 60416), 8 layers of
  # which the first half are memory layers, bf16 compute.
  CFG=configs/memory3.py:paper_2p4b
  SHAPE=(--config.model.num_layers=8 "--config.model.memory.memory_layers=(0,1,2,3)")
  DECODE=(--batch 32 --prompt-len 128 --new-tokens 128 --num-refs 2048 --runs 5)
  TRAIN=(--steps 5 --batch 4)
  CEIL=()
  MEMORY=()
fi

step() { echo; echo "=== $* ==="; }
step ceilings
$PY -m experiments.bench_ceilings "${CEIL[@]}" --out "$OUT"
CEILJSON=$(ls "$OUT"/bench_ceilings_*.json | head -1)
step decode
$PY -m experiments.bench_decode --config "$CFG" "${SHAPE[@]}" "${DECODE[@]}" \
  --ceilings "$CEILJSON" --out "$OUT"
step train
$PY -m experiments.bench_train --config "$CFG" "${SHAPE[@]}" "${TRAIN[@]}" \
  --ceilings "$CEILJSON" --out "$OUT"
step memory
$PY -m experiments.bench_memory --config "$CFG" "${SHAPE[@]}" "${MEMORY[@]}" --out "$OUT"
echo; echo "gpu_check done: $(ls "$OUT")"
