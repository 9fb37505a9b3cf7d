"""Bank scale benchmark (issue #12): how the explicit-memory bank grows with its size.

At each size N (default 1e4, 1e5, 1e6 references) on this machine's CPU:
  build     rows/s of ``MemoryBank.append`` (sharded, checksummed; ids, texts, K/V, mask)
  retrieval ScaNN (tree + AH + reorder) ms/query and recall@5 against exact search, on
            SVD-TF-IDF embeddings of generated knowledge-base references (real text, not
            uniform random vectors); exact = brute-force inner product (numpy)
  read      cold (freshly opened bank, new TensorStore context, no LRU; the OS page cache
            is not dropped) and warm latency of reading 160 memories by id
  bytes     on disk (du), and bytes/row at the paper's memory shape (measured on 256 rows)
  open      ``MemoryBank.open`` seconds (manifest, id-index fences, tail, tombstones)
and the growth exponent b of every figure (least squares of log y = a + b log N).

  nice -n 10 .venv/bin/python experiments/bench_bank_scale.py [--sizes 1e4 1e5 1e6]

Writes experiments/results/bench_bank_scale.json and prints a table. Memories are random
of the small shape (encoding is benchmarked in bench_memory.py); bytes and I/O do not
depend on the values.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from m3jax.memory.layout import BankLayout  # noqa: E402
from m3jax.memory.store import MemoryBank  # noqa: E402

SMALL = BankLayout(num_layers=2, kv_heads=2, tokens=4, head_dim=16)
PAPER = BankLayout(num_layers=22, kv_heads=8, tokens=8, head_dim=80)  # SPEC.md §2
SYL = [
  "ka",
  "lo",
  "mi",
  "ran",
  "tez",
  "vo",
  "qui",
  "sha",
  "dor",
  "pel",
  "ux",
  "bri",
  "na",
  "gor",
  "fi",
  "zel",
]
ATTRS = ["capital", "river", "founder", "language", "currency", "mountain", "export", "anthem"]


def kb_texts(n: int, seed: int = 0) -> list[str]:
  """Generated knowledge-base references: an invented entity and three attributes each."""
  rng = np.random.default_rng(seed)
  syl = np.array(SYL)

  def names(k):
    parts = syl[rng.integers(0, len(SYL), (k, 3))]
    return ["".join(p).capitalize() for p in parts]

  ent, a1, a2, a3 = names(n), names(n), names(n), names(n)
  at = rng.integers(0, len(ATTRS), (n, 3))
  year = rng.integers(1200, 2020, n)
  return [
    f"{e} (entry {i}). The {ATTRS[t[0]]} of {e} is {x}. Its {ATTRS[t[1]]} is {y}, "
    f"recorded in {yr}. People of {e} know {z} as its {ATTRS[t[2]]}."
    for i, (e, x, y, z, t, yr) in enumerate(zip(ent, a1, a2, a3, at, year))
  ]


def growth(sizes, values) -> float | None:
  pts = [(np.log(n), np.log(v)) for n, v in zip(sizes, values) if v and v > 0]
  if len(pts) < 2:
    return None
  x, y = np.array(pts).T
  return float(np.polyfit(x, y, 1)[0])


def du(path: str) -> int:
  return int(subprocess.check_output(["du", "-sb", path]).split()[0])


def build_bank(url, layout, ids, texts, batch, shard_refs=512, seed=0):
  rng = np.random.default_rng(seed)
  bank = MemoryBank.create(url, layout, sharded=True, shard_refs=shard_refs, cache_size=0)
  shape = (batch,) + layout.row_shape
  k = rng.standard_normal(shape, np.float32)
  mask = np.ones((batch, layout.tokens), bool)
  tok = rng.integers(0, 128, shape[:-1]).astype(np.int32)
  t0 = time.perf_counter()
  for s in range(0, len(ids), batch):
    n = min(batch, len(ids) - s)
    bank.append(ids[s : s + n], k[:n], -k[:n], mask[:n], tok[:n], texts=texts[s : s + n])
  bank.finalize()
  return bank, time.perf_counter() - t0


def read_latency(url, ids, rng, reps=5):
  """(cold ms, warm ms) for 160 random ids; cold = a freshly opened bank each rep."""
  import tensorstore as ts

  cold, warm = [], []
  for _ in range(reps):
    pick = [ids[i] for i in rng.choice(len(ids), 160, replace=False)]
    bank = MemoryBank.open(
      url, cache_size=0, context=ts.Context({"cache_pool": {"total_bytes_limit": 1 << 27}})
    )
    t0 = time.perf_counter()
    rows = bank.read(pick)
    cold.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    bank.read(pick)
    warm.append(time.perf_counter() - t0)
    assert rows.keys.shape[0] == 160
  return 1e3 * float(np.median(cold)), 1e3 * float(np.median(warm))


def open_time(url, reps=3):
  import tensorstore as ts

  out = []
  for _ in range(reps):
    t0 = time.perf_counter()
    MemoryBank.open(url, context=ts.Context())
    out.append(time.perf_counter() - t0)
  return float(np.median(out))


def exact_top5(emb, queries, block=100_000):
  """Exact inner-product top-5 ids (as strings), database in blocks (bounded memory)."""
  best_s = np.full((len(queries), 0), -np.inf, np.float32)
  best_i = np.zeros((len(queries), 0), np.int64)
  for s in range(0, len(emb), block):
    sc = queries @ emb[s : s + block].T
    top = np.argpartition(-sc, 5, axis=1)[:, :5]
    best_s = np.concatenate([best_s, np.take_along_axis(sc, top, 1)], 1)
    best_i = np.concatenate([best_i, top + s], 1)
    keep = np.argsort(-best_s, axis=1)[:, :5]
    best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
  return [[str(i) for i in row] for row in best_i]


def retrieval(emb, queries, args):
  from m3jax.memory.retriever import ScannRetriever

  ids = [str(i) for i in range(len(emb))]
  want = exact_top5(emb, queries)
  t0 = time.perf_counter()
  sc = ScannRetriever(
    ids,
    emb,
    brute_force_max=args.brute_force_max,
    reorder=args.reorder,
    search_fraction=args.search_fraction,
  )
  build_s = time.perf_counter() - t0
  sc.search(queries[:8], 5)
  t0 = time.perf_counter()
  got, _ = sc.search(queries, 5)
  batched_ms = 1e3 * (time.perf_counter() - t0) / len(queries)
  t0 = time.perf_counter()
  for q in queries[:100]:
    sc.search(q[None], 5)
  single_ms = 1e3 * (time.perf_counter() - t0) / 100
  recall = float(np.mean([len(set(g) & set(w)) / 5 for g, w in zip(got, want)]))
  return {
    "scann_mode": sc.mode,
    "scann_build_s": build_s,
    "ms_per_query_batched": batched_ms,
    "ms_per_query_single": single_ms,
    "recall_at_5": recall,
  }


def run_size(n, args, root, embedder):
  rng = np.random.default_rng(n)
  texts = kb_texts(n, seed=n)
  ids = [f"kb{i}#0" for i in range(n)]
  t0 = time.perf_counter()
  emb = np.concatenate([embedder.embed(texts[s : s + 50_000]) for s in range(0, n, 50_000)])
  embed_s = time.perf_counter() - t0
  # Queries: a question-like fragment of a random reference (entity + one attribute).
  qi = rng.choice(n, args.queries, replace=False)
  qtexts = [texts[i].split(". ")[1] for i in qi]
  queries = embedder.embed(qtexts)
  out = {"n": n, "embed_s": embed_s}
  out.update(retrieval(emb, queries, args))
  del emb
  url = os.path.join(root, f"bank{n}")
  bank, build_s = build_bank(url, SMALL, ids, texts, args.batch, args.shard_refs)
  # Flush the build's dirty pages first: reads measured while the OS writes back 1.5 GB
  # (10^6 rows) measured the write-back (20 ms cold against 12-13 ms once flushed). "Cold"
  # here is a freshly opened bank (no TensorStore or row cache); the OS page cache stays.
  os.sync()
  out["build_rows_per_s"] = n / build_s
  out["build_s"] = build_s
  out["bytes_on_disk"] = du(url)
  out["bytes_per_row"] = out["bytes_on_disk"] / n
  out["open_s"] = open_time(url)
  out["read160_cold_ms"], out["read160_warm_ms"] = read_latency(url, ids, rng)
  shutil.rmtree(url)
  return out


def paper_bytes_per_row(root, rows=256) -> dict:
  url = os.path.join(root, "paper")
  ids = [f"p{i}" for i in range(rows)]
  build_bank(url, PAPER, ids, kb_texts(rows), 64)
  got = du(url) / rows
  shutil.rmtree(url)
  raw = 2 * int(np.prod(PAPER.row_shape)) * 2
  return {"bytes_per_row": got, "kv_bytes_per_row": raw, "layout": PAPER.__dict__}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--sizes", nargs="+", type=float, default=[1e4, 1e5, 1e6])
  p.add_argument("--queries", type=int, default=1000)
  p.add_argument("--batch", type=int, default=4096, help="rows per append")
  p.add_argument(
    "--shard-refs",
    type=int,
    default=512,
    help="rows per shard (a cold read loads one shard index per shard touched)",
  )
  p.add_argument("--dim", type=int, default=64, help="SVD TF-IDF embedding width")
  p.add_argument("--brute-force-max", type=int, default=20_000)
  p.add_argument("--reorder", type=int, default=1000)
  p.add_argument("--search-fraction", type=float, default=0.1)
  p.add_argument("--workdir", default=None, help="scratch dir (default: a temp dir)")
  p.add_argument(
    "--previous-rows",
    default=None,
    help="JSONL of rows measured by an earlier run of this script (sizes skipped)",
  )
  p.add_argument(
    "--out",
    default=os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "results", "bench_bank_scale.json"
    ),
  )
  args = p.parse_args(argv)
  from m3jax.evaluate.report import machine
  from m3jax.memory.embedders import TfidfEmbedder

  root = tempfile.mkdtemp(prefix="bank_scale_", dir=args.workdir)
  try:
    t0 = time.perf_counter()
    embedder = TfidfEmbedder(args.dim).fit(kb_texts(20_000, seed=12345))
    fit_s = time.perf_counter() - t0
    rows = []
    if args.previous_rows:
      with open(args.previous_rows) as f:
        rows = [dict(json.loads(line), reused_from_earlier_run=True) for line in f if line.strip()]
    for n in [int(s) for s in args.sizes]:
      if any(r["n"] == n for r in rows):
        continue
      print(f"bench_bank_scale: n={n:,}", flush=True)
      rows.append(run_size(n, args, root, embedder))
      print(json.dumps(rows[-1]), flush=True)
    paper = paper_bytes_per_row(root)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  sizes = [r["n"] for r in rows]
  figures = [
    "build_rows_per_s",
    "build_s",
    "ms_per_query_batched",
    "ms_per_query_single",
    "recall_at_5",
    "read160_cold_ms",
    "read160_warm_ms",
    "bytes_on_disk",
    "open_s",
  ]
  res = {
    "sizes": sizes,
    "rows": rows,
    "embedder": f"TF-IDF + SVD-{args.dim} (fit in {fit_s:.1f} s on 20k generated references)",
    "scann": {
      "reorder": args.reorder,
      "search_fraction": args.search_fraction,
      "leaves": "sqrt(n)",
      "brute_force_max": args.brute_force_max,
    },
    "growth_exponent": {f: growth(sizes, [r[f] for r in rows]) for f in figures},
    "paper_shape": paper,
    "machine": machine(),
  }
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(res, f, indent=1)
  print(f"{'figure':24s}" + "".join(f"{n:>14,}" for n in sizes) + f"{'exponent':>10s}")
  for fig in figures:
    g = res["growth_exponent"][fig]
    print(
      f"{fig:24s}"
      + "".join(f"{r[fig]:>14.4g}" for r in rows)
      + (f"{g:>10.2f}" if g is not None else f"{'-':>10s}")
    )
  print(
    f"paper shape: {paper['bytes_per_row']:.0f} B/row on disk "
    f"({paper['kv_bytes_per_row']} B of K/V); results -> {args.out}"
  )
  return res


if __name__ == "__main__":
  from m3jax.run.hugepages import reexec_with_hugepages

  reexec_with_hugepages()  # time the allocator the CLI runs with
  main()
