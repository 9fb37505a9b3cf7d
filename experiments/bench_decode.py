"""Decode throughput with and without explicit memory, and RAG, on the same weights.

The paper's protocol (Table 21, §7.5): batch 32, 128 input tokens, 128 output tokens;
Memory³ does 2·128/64 − 1 = 3 retrievals of 32×5 memories (two prompt chunks, then one
after the first 64 generated tokens); the worst case makes reference ids unique after the
search and disables the RAM cache, so every memory is read from the TensorStore bank on
disk; RAG retrieves 5 reference texts once with the first 64-token query and prefills them
before the prompt. Throughput = 32·128 / (time to first token + decode time).

Timing: one untimed warm-up round (compilation), then ``--runs`` rounds (default 9), each
running every condition once, interleaved (odd rounds in reverse order), so a slow spell of
the machine hits all conditions of a round alike. Each ratio is reported as the median and
spread (min, quartiles, max, all values) of its per-round paired ratios; per-condition
figures are medians over the rounds. On a shared CPU single ratios vary by ±20%, so only
the median of many pairs can be read.

Prints a table and writes ``experiments/results/bench_decode_<device>.json`` (or --out):
tokens/s and time to first token per condition, ``ratio_memory_vs_none`` (cold cache),
``ratio_memory_vs_rag`` (cache off = the worst case, and cache on; medians, spread under
``ratios``), and the share of the
memory condition's time spent in retrieval, bank reads and device compute.

  python experiments/bench_decode.py                      # small config, CPU-sized
  python experiments/bench_decode.py --config configs/memory3.py:paper_2p4b \\
      --config.model.num_layers=8 --config.model.memory.memory_layers='(0,1,2,3)'
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import bench_common
from m3jax.run.config import load_config
from m3jax.data.references import Reference
from m3jax.evaluate import speed
from m3jax.inference.generate import Generator
from m3jax.inference.sampling import SamplingConfig
from m3jax.memory.build import BankConfig, build_bank, build_index_for
from m3jax.memory.feeder import MemoryFeeder
from m3jax.memory.lru import LRUCache
from m3jax.model.config import model_config_from
from m3jax.model.transformer import Transformer


def token_text(tokens) -> str:
  """Token ids as words: retrieval runs on text, and the random world has no tokenizer."""
  return " ".join(f"w{int(t)}" for t in tokens)


def make_world(cfg, num_refs: int, seed: int):
  """Random references and prompts stitched from reference pieces (so retrieval matters)."""
  rng = np.random.default_rng(seed)
  n = cfg.memory.ref_len
  refs = []
  for i in range(num_refs):
    toks = rng.integers(8, cfg.vocab_size, n)
    refs.append(Reference(f"ref{i:07d}", token_text(toks), tuple(int(t) for t in toks)))
  return refs, rng


def make_prompts(refs, batch: int, prompt_len: int, rng):
  prompts = []
  for _ in range(batch):
    picks = rng.choice(len(refs), size=-(-prompt_len // 64), replace=False)
    toks = np.concatenate([np.asarray(refs[p].tokens[:64]) for p in picks])[: prompt_len - 1]
    prompts.append(toks.astype(np.int32))
  return prompts


class TimedMemory:
  """memory_fn for the Generator over the real feeder, with retrieval / bank timers."""

  def __init__(self, feeder: MemoryFeeder, refs, unique: bool, dtype):
    self.feeder, self.unique, self.dtype = feeder, unique, dtype
    self.all_ids = [r.id for r in refs]
    self.retrieval_s = self.bank_s = 0.0
    self.calls = 0

  def reset(self):
    self.retrieval_s = self.bank_s = 0.0
    self.calls = 0

  def __call__(self, queries):
    t0 = time.perf_counter()
    ids = self.feeder.retrieve([token_text(q.tokens) for q in queries])
    if self.unique:  # worst case: every memory of the batch is a distinct bank read
      seen, spare = set(), iter(self.all_ids)
      for q in range(ids.shape[0]):
        for r in range(ids.shape[1]):
          while ids[q, r] is None or ids[q, r] in seen:
            ids[q, r] = next(spare)
          seen.add(ids[q, r])
    t1 = time.perf_counter()
    mem = self.feeder.assemble(ids[:, None, :])
    jax.block_until_ready(mem)
    self.retrieval_s += t1 - t0
    self.bank_s += time.perf_counter() - t1
    self.calls += 1
    return mem, ids


class ResidentMemory:
  """memory_fn whose memories are already on the device: isolates the device-side cost of
  reading memory (attention over 5×8 extra keys per head, swaps) from retrieval and I/O."""

  def __init__(self, timed: "TimedMemory", prompts, chunk_len: int):
    from m3jax.inference.generate import ChunkQuery

    self.mem, self.ids = timed([ChunkQuery(0, 0, np.asarray(p[:chunk_len])) for p in prompts])
    self.n = len(prompts)

  def __call__(self, queries):
    n = len(queries)
    take = np.arange(n) % self.n
    pick = lambda x, axis: jnp.take(x, take, axis=axis)
    from m3jax.model.memory_kv import MemoryKV

    mem = MemoryKV(
      pick(self.mem.keys_LxBxCxRxKxMxD, 1),
      pick(self.mem.values_LxBxCxRxKxMxD, 1),
      pick(self.mem.mask_BxCxRxM, 0),
    )
    return mem, self.ids[take]


def run_once(
  gen: Generator, prompts, new_tokens: int, memory_fn=None, timer: TimedMemory | None = None
) -> dict:
  """speed.generate_row, plus the memory source's retrieval and bank-read timers."""
  if timer is not None:
    timer.reset()
  row = speed.generate_row(gen, prompts, new_tokens, memory_fn)
  return dict(
    row,
    retrieval_s=timer.retrieval_s if timer else 0.0,
    bank_s=timer.bank_s if timer else 0.0,
    retrievals=timer.calls if timer else 0,
  )


def summarize_rows(rows: list[dict]) -> dict:
  """Median of each field over the timed rounds, and the device's share of the time."""
  out = speed.median_row(rows)
  out["device_s"] = out["total_s"] - out["retrieval_s"] - out["bank_s"]
  return out


def rag_prompts(feeder: MemoryFeeder, refs_by_id, prompts, timer_box: dict):
  """One retrieval per sample with its first 64 tokens; 5 reference texts prefilled."""
  t0 = time.perf_counter()
  ids = feeder.retrieve([token_text(p[:64]) for p in prompts])
  timer_box["retrieval_s"] = time.perf_counter() - t0
  out = []
  for p, row in zip(prompts, ids):
    ctx = [np.asarray(refs_by_id[i].tokens, np.int32) for i in row if i is not None]
    out.append(np.concatenate(ctx + [p]).astype(np.int32))
  return out, ids


def decode_roofline(cfg, params, args, results, ceilings_path):
  """Bytes one decode step must read (weights + average KV cache) vs the step time."""
  weight_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
  weight_bytes -= cfg.vocab_size * cfg.embed_dim * jnp.dtype(cfg.dtype).itemsize  # a gather
  avg_ctx = args.prompt_len + args.new_tokens / 2
  cache_bytes = (
    2
    * cfg.num_layers
    * args.batch
    * avg_ctx
    * cfg.num_kv_heads
    * cfg.head_dim
    * jnp.dtype(cfg.dtype).itemsize
  )
  out = {"weight_bytes": int(weight_bytes), "cache_bytes_avg": int(cache_bytes)}
  for name in ("no_memory", "memory_resident", "memory_cache_on", "memory_cache_off"):
    r = results[name]
    step_s = r["decode_s"] / max(args.new_tokens - 1, 1)  # mid-decode retrieval included
    out[name] = {
      "step_ms": 1000 * step_s,
      "achieved_tb_per_s": (weight_bytes + cache_bytes) / step_s / 1e12,
    }
  if ceilings_path and os.path.exists(ceilings_path):
    import json

    with open(ceilings_path) as f:
      copy = json.load(f)["copy"]["tb_per_s"]
    out["copy_tb_per_s"] = copy
    for name in ("no_memory", "memory_resident", "memory_cache_on", "memory_cache_off"):
      out[name]["fraction_of_copy_roofline"] = out[name]["achieved_tb_per_s"] / copy
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/memory3.py:small")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--prompt-len", type=int, default=128)
  parser.add_argument("--new-tokens", type=int, default=128)
  parser.add_argument("--num-refs", type=int, default=1024)
  parser.add_argument(
    "--runs",
    type=int,
    default=9,
    help="timed rounds after one warm-up round; each round runs every "
    "condition once (interleaved), giving one paired ratio",
  )
  parser.add_argument("--bank-dir", default=None)
  parser.add_argument("--out", default=None)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--ceilings", default=None, help="bench_ceilings JSON: report decode against the copy bandwidth"
  )
  args, overrides = parser.parse_known_args(argv)
  config = load_config(args.config, overrides)
  cfg = model_config_from(config.model.to_dict())
  runs = args.runs

  params = Transformer(cfg).init(jax.random.key(args.seed), jnp.ones((1, 8), jnp.int32))
  # Inference weights in the compute dtype: cast once, not per step.
  params = jax.tree.map(
    lambda x: jnp.asarray(x, cfg.dtype), __import__("flax").linen.meta.unbox(params)["params"]
  )
  refs, rng = make_world(cfg, args.num_refs, args.seed)
  prompts = make_prompts(refs, args.batch, args.prompt_len, rng)
  bank_dir = args.bank_dir or tempfile.mkdtemp(prefix="m3jax_bench_bank_")
  # Sharded zarr v3 (one inner chunk per reference): a gather reads only its rows.
  bank_cfg = BankConfig(
    cache_size=0, encode_batch_size=64, index_kind="auto", sharded=True, shard_refs=1024
  )
  t0 = time.perf_counter()
  bank = build_bank(
    params,
    cfg,
    refs,
    os.path.join(bank_dir, "bank"),
    bank_cfg=bank_cfg,
    build_index=False,
    progress=True,
  )
  build_s = time.perf_counter() - t0
  embedder, retriever = build_index_for(refs, bank_cfg)
  feeder = MemoryFeeder(embedder, retriever, bank, cfg.memory.refs_per_chunk, dtype=cfg.dtype)
  gen = Generator(cfg, params, sampling=SamplingConfig(), stop_at_eos=False)

  resident = ResidentMemory(
    TimedMemory(feeder, refs, unique=False, dtype=cfg.dtype), prompts, cfg.memory.chunk_len
  )
  worst = TimedMemory(feeder, refs, unique=True, dtype=cfg.dtype)
  cached = TimedMemory(feeder, refs, unique=False, dtype=cfg.dtype)
  cold_cache, warm_cache = LRUCache(0), LRUCache(4 * args.batch * cfg.memory.refs_per_chunk * 3)
  box = {}
  rag, _ = rag_prompts(feeder, {r.id: r for r in refs}, prompts, box)

  def with_cache(cache, fn):
    def run():
      bank.cache = cache
      return fn()

    return run

  conditions = {
    "no_memory": lambda: run_once(gen, prompts, args.new_tokens),
    "memory_resident": lambda: run_once(gen, prompts, args.new_tokens, resident),
    "memory_cache_off": with_cache(
      cold_cache, lambda: run_once(gen, prompts, args.new_tokens, worst, worst)
    ),
    "memory_cache_on": with_cache(
      warm_cache, lambda: run_once(gen, prompts, args.new_tokens, cached, cached)
    ),
    "rag": lambda: run_once(gen, rag, args.new_tokens),
  }
  rows = speed.run_interleaved(conditions, runs)
  feeder.close()
  results = {name: summarize_rows(r) for name, r in rows.items()}
  results["rag"]["retrieval_s"] = box["retrieval_s"]

  pair = lambda a, b: speed.paired_ratio(rows[a], rows[b])
  ratios = {
    "memory_vs_none": pair("memory_cache_off", "no_memory"),
    "memory_vs_none_resident": pair("memory_resident", "no_memory"),
    "memory_vs_none_cache_on": pair("memory_cache_on", "no_memory"),
    "memory_vs_rag": pair("memory_cache_off", "rag"),
    "memory_vs_rag_cache_on": pair("memory_cache_on", "rag"),
  }
  summary = {
    "machine": bench_common.describe_machine(),
    "load_average_1m": os.getloadavg()[0],  # other work on the box skews CPU times
    "config": {
      "arg": args.config,
      "overrides": overrides,
      "num_layers": cfg.num_layers,
      "embed_dim": cfg.embed_dim,
      "heads": cfg.num_heads,
      "kv_heads": cfg.num_kv_heads,
      "memory_layers": list(cfg.memory.memory_layers),
      "dtype": jnp.dtype(cfg.dtype).name,
      "vocab": cfg.vocab_size,
    },
    "protocol": {
      "batch": args.batch,
      "prompt_len": args.prompt_len,
      "new_tokens": args.new_tokens,
      "runs": runs,
      "warmup_rounds": 1,
      "interleaved": True,
      "bank_refs": args.num_refs,
      "bank_build_s": build_s,
      "retrievals_per_run": results["memory_cache_off"]["retrievals"],
    },
    "conditions": results,
    # Medians of the per-round paired ratios (spread and values under "ratios").
    "ratios": ratios,
    **{f"ratio_{k}": v["median"] for k, v in ratios.items()},
    "memory_time_share": {
      k: results["memory_cache_off"][f"{k}_s"] / results["memory_cache_off"]["total_s"]
      for k in ("retrieval", "bank", "device")
    },
    "paper_table21": {
      "memory3_with_retrieval": 733.0,
      "memory3_without": 1131.0,
      "ratio": 733.0 / 1131.0,
    },
  }
  summary["roofline"] = decode_roofline(cfg, params, args, results, args.ceilings)
  rows = [
    (
      name,
      f"{r['tokens_per_s']:.1f}",
      f"{1000 * r['ttft_s']:.1f}",
      f"{1000 * r['retrieval_s']:.1f}",
      f"{1000 * r['bank_s']:.1f}",
      f"{1000 * r['device_s']:.1f}",
    )
    for name, r in results.items()
  ]
  bench_common.print_table(
    ["condition", "tokens/s", "TTFT ms", "retrieval ms", "bank ms", "device ms"], rows
  )
  for name, r in ratios.items():
    print(
      f"{name}: median {r['median']:.3f} over {r['n']} paired rounds "
      f"(min {r['min']:.3f}, quartiles {r['q25']:.3f}-{r['q75']:.3f}, max {r['max']:.3f})"
    )
  path = bench_common.write_json("bench_decode", summary, args.out)
  print(f"wrote {path}")
  return summary


if __name__ == "__main__":
  from m3jax.run.hugepages import reexec_with_hugepages

  reexec_with_hugepages()  # time the allocator the CLI runs with
  main()
