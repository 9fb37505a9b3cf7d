"""The two ceilings every other benchmark is judged against: matmul rate and copy bandwidth.

Measures a large bf16 matmul (TFLOP/s) and a large device-to-device copy (bytes read +
written per second) with the same JAX that runs the model. Prints a table and writes
``experiments/results/bench_ceilings_<device>.json`` (or --out DIR).

  python experiments/bench_ceilings.py [--size 8192] [--copy-gib 2] [--out DIR]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from experiments import bench_common


def measure_matmul(size: int, dtype=jnp.bfloat16) -> dict:
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (size, size), dtype)  # random data: zeros run faster
  b = jax.random.normal(kb, (size, size), dtype)
  seconds = bench_common.median_seconds(jax.jit(lambda x, y: x @ y), a, b, repeats=10)
  return {
    "size": size,
    "dtype": jnp.dtype(dtype).name,
    "seconds": seconds,
    "tflops": 2 * size**3 / seconds / 1e12,
  }


def measure_copy(gib: float) -> dict:
  n = int(gib * 2**30) // 4
  x = jax.random.uniform(jax.random.key(1), (n,), jnp.float32)
  # x * 1 + 0 is a fused elementwise pass: one read and one write of every byte.
  seconds = bench_common.median_seconds(jax.jit(lambda v: v * 1.0000001), x, repeats=10)
  return {"bytes": 2 * 4 * n, "seconds": seconds, "tb_per_s": 2 * 4 * n / seconds / 1e12}


def measure(size: int, copy_gib: float) -> dict:
  return {"matmul": measure_matmul(size), "copy": measure_copy(copy_gib)}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--size", type=int, default=None, help="matmul size (default: 8192 GPU, 1024 CPU)")
  p.add_argument("--copy-gib", type=float, default=None)
  p.add_argument("--out", default=None, help="output dir (default experiments/results)")
  args = p.parse_args(argv)
  on_cpu = jax.default_backend() == "cpu"
  size = args.size or (1024 if on_cpu else 8192)
  gib = args.copy_gib or (0.25 if on_cpu else 4.0)
  result = {"machine": bench_common.describe_machine(), **measure(size, gib)}
  rows = [
    ("bf16 matmul", f"{size}^3", f"{result['matmul']['tflops']:.1f} TFLOP/s"),
    ("device copy", f"{gib:g} GiB", f"{result['copy']['tb_per_s']:.3f} TB/s (read+write)"),
  ]
  bench_common.print_table(["ceiling", "size", "measured"], rows)
  path = bench_common.write_json("bench_ceilings", result, args.out)
  print(f"wrote {path}")
  return result


if __name__ == "__main__":
  from m3jax.run.hugepages import reexec_with_hugepages

  reexec_with_hugepages()  # time the allocator the CLI runs with
  main()
