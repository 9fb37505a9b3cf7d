"""Train-step time and MFU: stage 1, stage 2 (encode_grad on / off), and their ratios.

FLOPs come from the config with SPEC App. A's formulas (m3jax.train.flops, generalized
to H·d_h ≠ d):

  stage 1, per sequence of T tokens (×3 fwd+bwd, ×2 multiply-add):
    6·[ L·( T·(2·d·H·d_h + 2·d·d_h·H_kv + 3·d·W) + 2·T·(T/2)·H·d_h ) + T·V·d ]
  stage 2 adds the memory read (every query head of a memory layer attends R·k memory
  tokens, fwd+bwd):      6·L_mem·2·T·(R·k)·H·d_h
  and, counted separately, the live reference encoding of the C = T/chunk references
  (App. A's explicit write, with the layers an encoder runs, depth = deepest memory
  layer + 1; ×3 when gradients flow through it, ×1 with encode_grad off):
    2·[ depth·N·(2·d·H·d_h + 2·d·d_h·H_kv) + depth·2·(N²/2)·H·d_h + (depth−1)·N·3·d·W
        + L_mem·N²·H·d_h ]  per reference

MFU = model FLOPs / (step time · peak), against the nominal peak of the device and the
measured rate of a large matmul in the model's dtype (``--measure-matmul``). Prints a
table and writes ``experiments/results/bench_train_<device>.json``.

  python experiments/bench_train.py [--config configs/memory3.py:small] [--steps 5]
      [--measure-matmul] [--config.train.batch_size=8 ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from experiments import bench_common  # noqa: E402
from m3jax import sharding  # noqa: E402
from m3jax.run.config import load_config  # noqa: E402
from m3jax.model.config import model_config_from  # noqa: E402
from m3jax.train.flops import flops_encode, flops_memory_read, flops_stage1  # noqa: E402,F401
from m3jax.train.loop import make_mesh_from, resolve_seq_len  # noqa: E402
from m3jax.train.optimizer import make_optimizer  # noqa: E402
from m3jax.train.config import train_config_from  # noqa: E402
from m3jax.train.stages import StageSpec  # noqa: E402
from m3jax.train.state import create_train_state  # noqa: E402
from m3jax.train.step import make_train_step  # noqa: E402
from m3jax.train.synthetic import SyntheticIterator  # noqa: E402

# Nominal dense peaks (FLOP/s) by device tag and dtype; CPU is estimated from cpuinfo.
NOMINAL = {
  "h100": {"float32": 67e12, "bfloat16": 989e12},
  "h200": {"float32": 67e12, "bfloat16": 989e12},
  "a100": {"float32": 19.5e12, "bfloat16": 312e12},
}


def nominal_peak(tag: str, dtype: str) -> float | None:
  if tag in NOMINAL:
    return NOMINAL[tag].get(dtype)
  if tag == "cpu":  # cores × GHz × 32 fp32 FLOP/cycle (2 AVX2 FMA units × 8 lanes × 2)
    try:
      with open("/proc/cpuinfo") as f:
        mhz = max(float(l.split(":")[1]) for l in f if l.startswith("cpu MHz"))
      return os.cpu_count() * mhz * 1e6 * 32
    except (OSError, ValueError):
      return None
  return None


def time_steps(config, stage: StageSpec, steps: int) -> dict:
  cfg = model_config_from(config.model)
  mesh, rules = make_mesh_from(config)
  rules = sharding.normalize_rules(rules)
  seq_len, batch = resolve_seq_len(config), int(config.train.batch_size)
  tx = make_optimizer(config.train)
  it = SyntheticIterator(
    batch_size=batch,
    seq_len=seq_len,
    vocab_size=cfg.vocab_size,
    chunk_len=cfg.memory.chunk_len,
    ref_len=cfg.memory.ref_len,
    bos_id=cfg.bos_id,
    with_refs=stage.use_memory,
  )
  with sharding.activate(mesh, rules):
    state, shardings = create_train_state(cfg, tx, mesh, rules, jax.random.key(0))
    step = make_train_step(cfg, stage, tx, mesh=mesh, rules=rules, state_shardings=shardings)
    keys = ("inputs", "targets", "loss_mask") + (
      ("ref_tokens", "ref_lengths") if stage.use_memory else ()
    )
    batches = [{k: v for k, v in next(it).items() if k in keys} for _ in range(2)]
    t0 = time.perf_counter()
    state, m = step(state, batches[0], jnp.float32(stage.peak_lr))
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    times = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(steps):
      t0 = time.perf_counter()
      state, m = step(state, batches[i % 2], jnp.float32(stage.peak_lr))
      jax.block_until_ready(m)
      times.append(time.perf_counter() - t0)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
  times.sort()
  return {
    "step_s": times[len(times) // 2],
    "compile_s": compile_s,
    "tokens_per_s": batch * seq_len / times[len(times) // 2],
    "minor_faults_per_step": faults / max(steps, 1),  # page faults of the timed steps
  }


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="configs/memory3.py:small")
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--measure-matmul", action="store_true")
  p.add_argument("--matmul-size", type=int, default=2048)
  p.add_argument("--out", default=None)
  args, overrides = p.parse_known_args(argv)
  config = load_config(args.config, overrides)
  cfg = model_config_from(config.model)
  seq_len, batch = resolve_seq_len(config), int(config.train.batch_size)
  base = train_config_from(config.train).stages
  s1 = dataclasses.replace(base[0], use_memory=False)
  s2 = dataclasses.replace(base[-1], use_memory=True, init_from="")
  modes = {
    "stage1": s1,
    "stage2_encode_grad": dataclasses.replace(s2, encode_grad=True),
    "stage2_no_encode_grad": dataclasses.replace(s2, encode_grad=False),
  }
  dtype = jnp.dtype(cfg.dtype).name
  tag = bench_common.device_tag()
  peak_nominal = nominal_peak(tag, dtype)
  measured = None
  if args.measure_matmul:
    from experiments.bench_ceilings import measure_matmul

    measured = measure_matmul(args.matmul_size, cfg.dtype)
  f1 = flops_stage1(cfg, seq_len) * batch
  rows, results = [], {}
  for name, stage in modes.items():
    r = time_steps(config, stage, args.steps)
    model = f1
    enc = 0.0
    if stage.use_memory:
      model += flops_memory_read(cfg, seq_len) * batch
      enc = flops_encode(cfg, seq_len, stage.encode_grad) * batch
    total = model + enc
    r.update(
      model_flops=model,
      encode_flops=enc,
      total_flops=total,
      achieved_tflops=total / r["step_s"] / 1e12,
    )
    if peak_nominal:
      r["mfu_nominal"] = total / r["step_s"] / peak_nominal
    if measured:
      r["mfu_measured"] = total / r["step_s"] / (measured["tflops"] * 1e12)
    results[name] = r
    rows.append(
      (
        name,
        f"{r['step_s'] * 1e3:.1f}",
        f"{r['tokens_per_s']:.0f}",
        f"{total / 1e9:.2f}",
        f"{enc / 1e9:.2f}",
        f"{r['achieved_tflops']:.4f}",
        f"{r.get('mfu_nominal', float('nan')):.3f}",
        f"{r.get('mfu_measured', float('nan')):.3f}",
      )
    )
  ratios = {
    k: results[k]["step_s"] / results["stage1"]["step_s"]
    for k in ("stage2_encode_grad", "stage2_no_encode_grad")
  }
  bench_common.print_table(
    [
      "mode",
      "step ms",
      "tok/s",
      "GFLOP/step",
      "encode GFLOP",
      "TFLOP/s",
      "MFU nominal",
      "MFU measured",
    ],
    rows,
  )
  print(
    "stage-2 / stage-1 step time:",
    {k: round(v, 3) for k, v in ratios.items()},
    "(paper / DESIGN: ~2x with encode_grad, ~1.35x without)",
  )
  result = {
    "machine": bench_common.describe_machine(),
    "config": args.config,
    "load_average_1m": os.getloadavg()[0],  # other work on the box skews CPU times
    "overrides": overrides,
    "batch_size": batch,
    "seq_len": seq_len,
    "dtype": dtype,
    "peak_nominal_flops": peak_nominal,
    "matmul": measured,
    "modes": results,
    "ratios_vs_stage1": ratios,
  }
  path = bench_common.write_json("bench_train", result, args.out)
  print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  from m3jax.run.hugepages import reexec_with_hugepages

  reexec_with_hugepages()  # time the allocator the CLI runs with
  raise SystemExit(main())
