"""Decode throughput and time to first token: no memory, memory, RAG (Table 21 set-up).

Same weights, same prompts: batch B, P prompt tokens, N new tokens (no early stop at
eos). One untimed warm-up round (compilation, cache fill), then ``runs`` rounds, each
running every condition once, interleaved (``run_interleaved``): a slow spell of a shared
machine hits every condition of a round alike, so the per-round paired ratios
(``paired_ratio``: median and spread) can be read where one back-to-back run of each
condition cannot (single ratios vary by ±20% on a shared CPU). Per-condition figures are
medians over the rounds. Throughput = B·N / (time to first token + decode time), as the
paper's 32×128 / time; the decode-only rate is reported beside it. Memory retrieves every chunk_len tokens
through the real feeder (embed, index, bank read); RAG does one retrieval with the first
64-token chunk and prepends the R references' text, then decodes without memory.

Memory is measured twice (as experiments/bench_decode.py does):

* ``memory`` (cold, the headline and the paper's worst case, Table 21): the bank's row
  cache is off and every memory slot of a retrieval gets a distinct reference id
  (duplicates and empty slots are replaced by unused ids), so every memory is a bank
  read from storage;
* ``memory_warm``: the retrieved ids as they are, through the bank's LRU row cache,
  which the dropped first run has filled (what a long-running server sees).
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Sequence

import numpy as np

from m3jax.inference.generate import Generator
from m3jax.inference.sampling import SamplingConfig


def generate_row(gen: Generator, prompts: Sequence[np.ndarray], new_tokens: int, memory_fn=None):
  """One timed generation -> {"tokens_per_s", "ttft_s", "decode_s", "total_s", "tokens",
  "swaps", ...}."""
  t0 = time.perf_counter()
  res = gen.generate(prompts, new_tokens, memory_fn=memory_fn)
  wall = time.perf_counter() - t0
  n = len(prompts) * new_tokens
  total = res.time_to_first_token + res.decode_seconds
  return {
    "swaps": res.num_swaps,
    "tokens_per_s": n / max(total, 1e-9),
    "decode_only_tokens_per_s": n / max(res.decode_seconds, 1e-9),
    "ttft_s": res.time_to_first_token,
    "decode_s": res.decode_seconds,
    "total_s": total,
    "wall_s": wall,
    "tokens": n,
  }


def run_interleaved(conditions: dict[str, Callable[[], dict]], runs: int, progress: bool = True):
  """Runs every condition once per round, ``runs`` rounds after one warm-up round.

  Interleaving pairs the conditions in time: a slow spell of the machine (other jobs,
  frequency changes) hits every condition of a round, so the per-round ratios cancel it
  where back-to-back blocks of one condition would not. Odd rounds run the conditions
  in reverse order so none always goes first. Returns {name: [row per timed round]}.
  """
  from tqdm.auto import tqdm

  names = list(conditions)
  for name in names:  # warm-up: compiles, fills caches; not timed
    conditions[name]()
  rows: dict[str, list[dict]] = {name: [] for name in names}
  for r in tqdm(range(runs), desc="decode rounds", disable=not progress):
    for name in names if r % 2 == 0 else names[::-1]:
      rows[name].append(conditions[name]())
  return rows


def paired_ratio(rows_a: Sequence[dict], rows_b: Sequence[dict]) -> dict:
  """Per-round tokens/s ratios a ÷ b: median, spread (min, max, quartiles) and values."""
  if len(rows_a) != len(rows_b) or not len(rows_a):
    raise ValueError(f"paired_ratio: {len(rows_a)} and {len(rows_b)} rounds; need equal, > 0")
  ratios = np.array([a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(rows_a, rows_b)])
  q25, q75 = np.percentile(ratios, [25, 75])
  return {
    "median": float(np.median(ratios)),
    "min": float(ratios.min()),
    "max": float(ratios.max()),
    "q25": float(q25),
    "q75": float(q75),
    "n": int(ratios.size),
    "values": ratios.tolist(),
  }


def median_row(rows: Sequence[dict]) -> dict:
  """Median of each numeric field over the timed rounds, plus the per-round tokens/s."""
  out: dict = {k: float(np.median([r[k] for r in rows])) for k in rows[0]}
  out["tokens_per_s_runs"] = [r["tokens_per_s"] for r in rows]
  return out


def unique_ids(ids_NxR: np.ndarray, pool: Sequence[str]) -> np.ndarray:
  """A copy of ``ids`` where every slot holds a distinct id: repeats and empty (None)
  slots take the next id of ``pool`` not used in this call (the worst case: no row is
  shared between queries)."""
  out = np.array(ids_NxR, dtype=object)
  flat = out.reshape(-1)
  seen = set()
  spare = iter([p for p in pool if p not in set(flat.tolist())])
  for i, x in enumerate(flat):
    if x is None or x in seen:
      x = next(spare, None)
      if x is None:
        raise ValueError(
          f"unique_ids: the pool of {len(pool)} ids is too small for "
          f"{flat.size} distinct memories; use a larger bank or batch"
        )
      flat[i] = x
    seen.add(x)
  return out


class ColdMemory:
  """A retrieved memory source with unique ids per call (see ``unique_ids``); combine it
  with ``cache_off(bank)`` for the cold figure."""

  def __init__(self, source, pool: Sequence[str]):
    self.source, self.pool = source, list(pool)

  def __call__(self, queries):
    ids = unique_ids(self.source.retrieve_ids(queries), self.pool)
    return self.source.feeder.assemble(ids[:, None]), ids


@contextlib.contextmanager
def cache_off(bank):
  """The bank's LRU row cache replaced by a disabled one for the block, then restored."""
  from m3jax.memory.lru import LRUCache

  saved = bank.cache
  bank.cache = LRUCache(0)
  try:
    yield
  finally:
    bank.cache = saved


def throughput(
  cfg,
  params,
  prompts: Sequence[np.ndarray],
  *,
  new_tokens: int,
  runs: int,
  memory_fn=None,
  rag_prompts: Sequence[np.ndarray] | None = None,
  bank=None,
  pool: Sequence[str] = (),
  progress: bool = False,
) -> dict:
  """-> {"conditions": {"no_memory", "memory" (cold), "memory_warm", "rag": medians},
  "ratios": {"memory_vs_none", "memory_vs_rag", ...: paired_ratio}} (conditions given).

  ``memory_fn``: a RetrievedMemory over ``bank``. With ``bank`` and ``pool`` (all ids
  of the bank) "memory" is cold and "memory_warm" is added; without them "memory" is
  whatever ``memory_fn`` does (and its row says ``"cold": False``).
  """
  gen = Generator(cfg, params, sampling=SamplingConfig(), stop_at_eos=False)
  conditions = {"no_memory": lambda: generate_row(gen, prompts, new_tokens)}
  cold = memory_fn is not None and bank is not None and len(pool) > 0
  if cold:
    source = ColdMemory(memory_fn, pool)

    def cold_row():
      with cache_off(bank):
        return generate_row(gen, prompts, new_tokens, source)

    def warm_row():
      c = bank.cache
      before = (c.hits, c.misses)
      row = generate_row(gen, prompts, new_tokens, memory_fn)
      hits, misses = c.hits - before[0], c.misses - before[1]
      return dict(row, cache_hit_rate=hits / max(hits + misses, 1))

    conditions["memory"], conditions["memory_warm"] = cold_row, warm_row
  elif memory_fn is not None:
    conditions["memory"] = lambda: generate_row(gen, prompts, new_tokens, memory_fn)
  if rag_prompts is not None:
    conditions["rag"] = lambda: generate_row(gen, rag_prompts, new_tokens)
  rounds = max(runs, 1)
  rows = run_interleaved(conditions, rounds, progress=progress)
  is_cold = {"memory": cold, "memory_warm": False}  # the memory rows say which they are
  out = {}
  for name, r in rows.items():
    row = median_row(r)
    if name in is_cold:
      row["cold"] = is_cold[name]
    used = rag_prompts if name == "rag" and rag_prompts is not None else prompts
    out[name] = dict(
      row,
      batch=len(used),
      prompt_tokens=int(np.mean([len(p) for p in used])),
      new_tokens=new_tokens,
    )
  pairs = {
    "memory_vs_none": ("memory", "no_memory"),
    "memory_warm_vs_none": ("memory_warm", "no_memory"),
    "memory_vs_rag": ("memory", "rag"),
    "memory_warm_vs_rag": ("memory_warm", "rag"),
  }
  ratios = {
    k: paired_ratio(rows[a], rows[b]) for k, (a, b) in pairs.items() if a in rows and b in rows
  }
  return {"conditions": out, "ratios": ratios, "rounds": rounds, "warmup_rounds": 1}
