"""Joint memory attention: dense two-part softmax vs one fused call (XLA / cuDNN flash).

One memory layer's attention at training shape (paper: T=2048, H=40, H_kv=8, d_h=80,
32 chunks × 5 references × 8 tokens), forward + backward, per implementation; error of
each against the float32 dense reference. Prints a table and writes
``experiments/results/bench_attention_<device>.json`` (or --out).

  python experiments/bench_attention.py [--seq 2048] [--batch 4] [--out DIR]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from experiments import bench_common
from m3jax.model.joint_attention import joint_attention


def make_inputs(batch, seq, heads, kv_heads, head_dim, chunk_len, refs, tokens, dtype, seed=0):
  keys = jax.random.split(jax.random.key(seed), 5)
  c = -(-seq // chunk_len)
  q = jax.random.normal(keys[0], (batch, seq, heads, head_dim), dtype)
  k = jax.random.normal(keys[1], (batch, seq + 1, kv_heads, head_dim), dtype)
  v = jax.random.normal(keys[2], (batch, seq + 1, kv_heads, head_dim), dtype)
  mk = jax.random.normal(keys[3], (batch, c, refs, kv_heads, tokens, head_dim), dtype)
  mv = jax.random.normal(keys[4], (batch, c, refs, kv_heads, tokens, head_dim), dtype)
  idx = jnp.arange(seq)
  mask = jnp.broadcast_to(
    jnp.concatenate([jnp.array([-1]), idx])[None] <= idx[:, None], (batch, seq, seq + 1)
  )
  mm = jnp.ones((batch, c, refs, tokens), bool).at[:, :4].set(False)  # first chunks: fewer
  return q, k, v, mask, (mk, mv, mm)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--seq", type=int, default=None)
  p.add_argument("--batch", type=int, default=None)
  p.add_argument("--heads", type=int, default=40)
  p.add_argument("--kv-heads", type=int, default=8)
  p.add_argument("--head-dim", type=int, default=80)
  p.add_argument("--out", default=None)
  args = p.parse_args(argv)
  on_cpu = jax.default_backend() == "cpu"
  seq = args.seq or (256 if on_cpu else 2048)
  batch = args.batch or (1 if on_cpu else 4)
  heads, kvh, d = (
    (8, 2, 32) if on_cpu and args.seq is None else (args.heads, args.kv_heads, args.head_dim)
  )
  dtype = jnp.float32 if on_cpu else jnp.bfloat16
  inputs = make_inputs(batch, seq, heads, kvh, d, 64, 5, 8, dtype)
  ref_inputs = jax.tree.map(lambda x: x.astype(jnp.float32) if x.dtype == dtype else x, inputs)
  reference = jax.jit(lambda *a: joint_attention(*a[:4], a[4], chunk_len=64))(*ref_inputs)

  impls = ["dense", "flat"] + ([] if on_cpu else ["cudnn"])
  results = {}
  for impl in impls:
    fwd = jax.jit(
      lambda q, k, v, m, mem, impl=impl: joint_attention(q, k, v, m, mem, chunk_len=64, impl=impl)
    )
    grad = jax.jit(
      jax.grad(
        lambda q, k, v, m, mem, impl=impl: (
          joint_attention(q, k, v, m, mem, chunk_len=64, impl=impl).astype(jnp.float32).sum()
        ),
        argnums=(0, 1, 2),
      )
    )
    try:
      out = fwd(*inputs)
      err = float(jnp.linalg.norm(out.astype(jnp.float32) - reference) / jnp.linalg.norm(reference))
      results[impl] = {
        "forward_ms": 1000 * bench_common.median_seconds(fwd, *inputs),
        "forward_backward_ms": 1000 * bench_common.median_seconds(grad, *inputs),
        "rel_error_vs_f32_dense": err,
      }
    except Exception as e:  # an implementation this backend lacks is reported, not fatal
      results[impl] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
  summary = {
    "machine": bench_common.describe_machine(),
    "shape": {
      "batch": batch,
      "seq": seq,
      "heads": heads,
      "kv_heads": kvh,
      "head_dim": d,
      "dtype": jnp.dtype(dtype).name,
      "memory_keys_per_chunk": 5 * 8,
    },
    "impls": results,
  }
  rows = [
    (
      k,
      f"{r.get('forward_ms', float('nan')):.2f}",
      f"{r.get('forward_backward_ms', float('nan')):.2f}",
      f"{r.get('rel_error_vs_f32_dense', float('nan')):.1e}",
      r.get("error", ""),
    )
    for k, r in results.items()
  ]
  bench_common.print_table(["impl", "fwd ms", "fwd+bwd ms", "rel err", "error"], rows)
  print(f"wrote {bench_common.write_json('bench_attention', summary, args.out)}")
  return summary


if __name__ == "__main__":
  from m3jax.run.hugepages import reexec_with_hugepages

  reexec_with_hugepages()  # time the allocator the CLI runs with
  main()
