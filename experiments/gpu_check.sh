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
set -uo pipefail
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
  TRAIN=(--steps 2)
  CEIL=(--size 256 --copy-gib 0.01)
  MEMORY=(--tiny)
  ATTN=(--seq 64 --batch 1 --heads 4 --kv-heads 2 --head-dim 16)
else
  # The paper's width and heads (d=3200, H=40, H_kv=8, d_h=80, vocab 60416), 8 layers of
  # which the first half are memory layers, bf16 compute.
  CFG=configs/memory3.py:paper_2p4b
  SHAPE=(--config.model.num_layers=8 "--config.model.memory.memory_layers=(0,1,2,3)")
  DECODE=(--batch 32 --prompt-len 128 --new-tokens 128 --num-refs 2048 --runs 9)
  # T=2048 as in the paper; cuDNN flash attention (falls back to dense where unsupported).
  TRAIN=(--steps 3 --measure-matmul --matmul-size 8192 --config.train.batch_size=4
         --config.data.seq_len=2048 --config.model.attention_impl=cudnn)
  CEIL=()
  MEMORY=(--num-embeddings 100000 --bank-refs 4096)
  ATTN=()
fi

FAILED=()
STEPS=${STEPS:-ceilings attention decode decode_cmdbuf train memory}   # a subset: STEPS="ceilings decode"
step() {  # step NAME CMD...: runs one benchmark; a failure is reported, the rest still run
  local name=$1; shift
  [[ " $STEPS " == *" $name "* ]] || return 0
  echo; echo "=== $name ==="
  if ! timeout "${STEP_TIMEOUT:-300}" "$@" 2>&1 | tee "${LOGDIR:-/tmp}/gpu_check_$name.log"; then FAILED+=("$name"); fi
}
set +e
step ceilings $PY -m experiments.bench_ceilings "${CEIL[@]}" --out "$OUT"
CEILJSON=$(ls "$OUT"/bench_ceilings_*.json 2>/dev/null | head -1)
step attention $PY -m experiments.bench_attention "${ATTN[@]}" --out "$OUT"
step decode $PY -m experiments.bench_decode --config "$CFG" "${SHAPE[@]}" "${DECODE[@]}" \
  --ceilings "$CEILJSON" --out "$OUT"
# The same decode with the whole while-loop body recorded as one CUDA graph (command
# buffer): per-token launch overhead is what separates decode from the bandwidth roofline.
step decode_cmdbuf env XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL \
  --xla_gpu_graph_min_graph_size=1" $PY -m experiments.bench_decode --config "$CFG" "${SHAPE[@]}" \
  "${DECODE[@]}" --runs 3 --ceilings "$CEILJSON" --out "$OUT/cmdbuf"
step train $PY -m experiments.bench_train --config "$CFG" "${SHAPE[@]}" "${TRAIN[@]}" \
  --out "$OUT"
step memory $PY -m experiments.bench_memory --config "$CFG" "${SHAPE[@]}" "${MEMORY[@]}" \
  --out "$OUT"
echo; echo "gpu_check done: $(ls "$OUT" | tr '\n' ' ')"
if [ ${#FAILED[@]} -gt 0 ]; then echo "FAILED: ${FAILED[*]}"; exit 1; fi
