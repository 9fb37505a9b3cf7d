"""Memory-bank benchmark: encode throughput vs the FLOP roofline, bank gather latency
(160 memories, cold and warm), ScaNN recall@5 and latency vs exact search, bytes/reference.

  .venv/bin/python experiments/bench_memory.py [--config configs/memory3.py:small]
      [--num-embeddings 100000] [--device-tag cpu]

Writes experiments/results/bench_memory_<tag>.json and prints a table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import bench_common  # noqa: E402
from m3jax.run.config import load_config  # noqa: E402
from m3jax.data.references import Reference  # noqa: E402
from m3jax.memory.build import make_encoder  # noqa: E402
from m3jax.memory.retriever import NumpyRetriever, ScannRetriever, scann_available  # noqa: E402
from m3jax.memory.storage import storage_report  # noqa: E402
from m3jax.memory.layout import BankLayout  # noqa: E402
from m3jax.memory.store import MemoryBank  # noqa: E402
from m3jax.model.config import model_config_from  # noqa: E402
from m3jax.model.transformer import Transformer  # noqa: E402


def explicit_write_flops(cfg) -> float:
  """SPEC App. A explicit-write cost of one reference (multiply-add = 2 FLOPs).

  2·[L_mem(l_ref(2d² + 2·d·d_h·H_kv) + 2·(l_ref²/2)·d) + (L_mem−1)·l_ref·3dW + L_mem·l_ref²·d]
  with d the attention width H·d_h (= the model width in the paper).
  """
  l_mem, l_ref = cfg.memory.encode_depth, cfg.memory.ref_len
  d, dh, hkv, w = cfg.num_heads * cfg.head_dim, cfg.head_dim, cfg.num_kv_heads, cfg.mlp_dim
  e = cfg.embed_dim
  proj = l_ref * (2 * e * d + 2 * e * dh * hkv)
  return 2 * (
    l_mem * (proj + 2 * (l_ref**2 / 2) * d) + (l_mem - 1) * l_ref * 3 * e * w + l_mem * l_ref**2 * d
  )


def matmul_tflops() -> float:
  """The measured matmul ceiling (bench_ceilings): 1024³ f32 on CPU, 8192³ bf16 on GPU
  (a 1024³ bf16 product leaves a GPU mostly idle and understates its peak ~20x)."""
  from experiments.bench_ceilings import measure_matmul

  if jax.devices()[0].platform == "cpu":
    return measure_matmul(1024, jnp.float32)["tflops"]
  return measure_matmul(8192, jnp.bfloat16)["tflops"]


def bench_encode(cfg, batch: int, batches: int) -> dict:
  params = jax.jit(Transformer(cfg).init)(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))[
    "params"
  ]
  rng = np.random.default_rng(0)
  refs = [
    Reference(str(i), "", tuple(rng.integers(8, cfg.vocab_size, cfg.memory.ref_len)))
    for i in range(batch * batches)
  ]
  encode = make_encoder(params, cfg, batch)
  encode(refs[:batch])  # compile
  t0 = time.perf_counter()
  encode(refs)
  seconds = time.perf_counter() - t0
  rate = len(refs) / seconds
  flops = explicit_write_flops(cfg)
  peak = matmul_tflops()
  return {
    "references_per_s": rate,
    "flops_per_reference": flops,
    "achieved_tflops": rate * flops / 1e12,
    "matmul_tflops": peak,
    "roofline_fraction": rate * flops / 1e12 / peak,
    "batch": batch,
  }


def bench_gather(cfg, num_refs: int, reads: int = 160, repeats: int = 5) -> dict:
  layout = BankLayout.from_model(cfg)
  tmp = tempfile.mkdtemp()
  try:
    url = os.path.join(tmp, "bank")
    bank = MemoryBank.create(url, layout)
    rng = np.random.default_rng(0)
    shape = (1000,) + layout.row_shape
    for s in range(0, num_refs, 1000):
      bank.append(
        [str(i) for i in range(s, s + 1000)],
        rng.normal(size=shape),
        rng.normal(size=shape),
        np.ones((1000, layout.tokens), bool),
        np.zeros(shape[:-1], np.int32),
      )
    bank.finalize()
    disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(url) for f in fs)
    cold, warm = [], []
    for r in range(repeats):
      ids = [str(i) for i in rng.choice(num_refs, reads, replace=False)]
      fresh = MemoryBank.open(url, cache_size=4 * reads)  # empty cache: disk reads
      t0 = time.perf_counter()
      fresh.read(ids)
      cold.append(time.perf_counter() - t0)
      t0 = time.perf_counter()
      fresh.read(ids)
      warm.append(time.perf_counter() - t0)
    return {
      "memories": reads,
      "bank_refs": num_refs,
      "cold_ms": 1e3 * float(np.median(cold)),
      "warm_ms": 1e3 * float(np.median(warm)),
      "disk_bytes_per_reference": disk / num_refs,
    }
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _unit(x):
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def bench_search(n: int, dim: int, queries: int, clustered: bool) -> dict:
  rng = np.random.default_rng(0)
  if clustered:  # text embeddings cluster by topic; uniform random is the worst case
    centers = _unit(rng.normal(size=(1000, dim)))
    emb = _unit(centers[rng.integers(0, 1000, n)] + 0.5 * _unit(rng.normal(size=(n, dim))))
    q = _unit(
      centers[rng.integers(0, 1000, queries)] + 0.5 * _unit(rng.normal(size=(queries, dim)))
    )
  else:
    emb, q = _unit(rng.normal(size=(n, dim))), _unit(rng.normal(size=(queries, dim)))
  ids = [str(i) for i in range(n)]
  out = {
    "n": n,
    "dim": dim,
    "queries": queries,
    "data": "clustered" if clustered else "uniform random",
  }
  exact = NumpyRetriever(ids, emb)
  t0 = time.perf_counter()
  want, _ = exact.search(q, 5)
  out["exact_ms_per_query"] = 1e3 * (time.perf_counter() - t0) / queries
  if not scann_available():
    return out
  t0 = time.perf_counter()
  tree = ScannRetriever(ids, emb, brute_force_max=0, search_fraction=0.1)
  out["scann_build_s"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  got, _ = tree.search(q, 5)
  out["scann_ms_per_query"] = 1e3 * (time.perf_counter() - t0) / queries
  out["scann_recall_at_5"] = float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(got, want)]))
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="configs/memory3.py:small")
  p.add_argument("--num-embeddings", type=int, default=100_000)
  p.add_argument("--bank-refs", type=int, default=10_000)
  p.add_argument("--encode-batches", type=int, default=8)
  p.add_argument("--device-tag", default=None, help="cpu | h100 | h200 (default: detected)")
  p.add_argument("--out", default=None, help="output dir (default experiments/results)")
  p.add_argument("--tiny", action="store_true", help="seconds-long smoke run (tests)")
  args, overrides = p.parse_known_args(argv)
  if args.tiny:
    args.num_embeddings, args.bank_refs, args.encode_batches = 2000, 200, 2
  config = load_config(args.config, overrides)
  cfg = model_config_from(config.model)
  bank_cfg = config.bank
  result = {"machine": bench_common.describe_machine(), "config": args.config}
  result["encode"] = bench_encode(cfg, bank_cfg.encode_batch_size, args.encode_batches)
  result["gather"] = bench_gather(cfg, args.bank_refs)
  result["search"] = [bench_search(args.num_embeddings, 256, 1000, c) for c in (False, True)]
  rep = storage_report(cfg, bank_cfg.pq_bytes_per_vector)
  result["bytes_per_reference"] = {
    "bf16": rep.bytes_bf16,
    "pq": rep.bytes_pq,
    "metadata": rep.metadata_bytes,
  }
  e, g = result["encode"], result["gather"]
  rows = [
    (
      "encode",
      f"{e['references_per_s']:.0f} refs/s",
      f"{e['achieved_tflops']:.3f} TFLOP/s = {100 * e['roofline_fraction']:.1f}% of "
      f"{e['matmul_tflops']:.2f} TFLOP/s matmul",
    ),
    ("gather 160 (cold)", f"{g['cold_ms']:.2f} ms", f"bank of {g['bank_refs']} refs on disk"),
    ("gather 160 (warm)", f"{g['warm_ms']:.2f} ms", "LRU hits"),
    (
      "bytes/reference",
      f"{rep.bytes_bf16:,} B bf16",
      f"{rep.bytes_pq:,} B PQ; on disk {g['disk_bytes_per_reference']:.0f} B (+metadata)",
    ),
  ]
  for s in result["search"]:
    rows.append(
      (
        f"exact search ({s['data']})",
        f"{s['exact_ms_per_query']:.3f} ms/query",
        f"n={s['n']}, d={s['dim']}",
      )
    )
    if "scann_recall_at_5" in s:
      rows.append(
        (
          f"ScaNN tree+AH ({s['data']})",
          f"{s['scann_ms_per_query']:.3f} ms/query",
          f"recall@5 {s['scann_recall_at_5']:.3f}, build {s['scann_build_s']:.1f} s",
        )
      )
  bench_common.print_table(("what", "value", "notes"), rows)
  path = bench_common.write_json("bench_memory", result, args.out, tag=args.device_tag)
  print(f"wrote {path}")


if __name__ == "__main__":
  from m3jax.run.hugepages import reexec_with_hugepages

  reexec_with_hugepages()  # time the allocator the CLI runs with
  main()
