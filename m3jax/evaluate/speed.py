"""Decode throughput and time to first token: no memory, memory, RAG (Table 21 set-up).

One run, same weights, same prompts: batch B, P prompt tokens, N new tokens (no early
stop at eos), ``runs`` repetitions with the first dropped (compilation / warm-up).
Throughput = B·N / (time to first token + decode time), as the paper's 32×128 / time;
the decode-only rate is reported beside it. Memory retrieves every chunk_len tokens
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
from typing import Sequence

import numpy as np

from m3jax.inference.generate import Generator
from m3jax.inference.sampling import SamplingConfig


def measure(
  gen: Generator, prompts: Sequence[np.ndarray], new_tokens: int, runs: int, memory_fn=None
) -> dict:
  stats = []
  for _ in range(max(runs, 2)):
    t0 = time.perf_counter()
    res = gen.generate(prompts, new_tokens, memory_fn=memory_fn)
    wall = time.perf_counter() - t0
    stats.append((wall, res.time_to_first_token, res.decode_seconds))
  wall, ttft, dec = (float(np.mean(x)) for x in zip(*stats[1:]))
  n = len(prompts) * new_tokens
  return {
    "tokens_per_s": n / wall,
    "decode_only_tokens_per_s": n / max(dec, 1e-9),
    "time_to_first_token_s": ttft,
    "wall_s": wall,
    "batch": len(prompts),
    "prompt_tokens": int(np.mean([len(p) for p in prompts])),
    "new_tokens": new_tokens,
  }


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
) -> dict:
  """-> {"no_memory", "memory" (cold), "memory_warm", "rag": stats} (conditions given).

  ``memory_fn``: a RetrievedMemory over ``bank``. With ``bank`` and ``pool`` (all ids
  of the bank) "memory" is cold and "memory_warm" is added; without them "memory" is
  whatever ``memory_fn`` does (and the result says ``"cold": False``).
  """
  gen = Generator(cfg, params, sampling=SamplingConfig(), stop_at_eos=False)
  out = {"no_memory": measure(gen, prompts, new_tokens, runs)}
  if memory_fn is not None:
    if bank is not None and len(pool):
      with cache_off(bank):
        out["memory"] = dict(
          measure(gen, prompts, new_tokens, runs, memory_fn=ColdMemory(memory_fn, pool)), cold=True
        )
      c = bank.cache
      before = (c.hits, c.misses)
      warm = measure(gen, prompts, new_tokens, runs, memory_fn=memory_fn)
      hits, misses = c.hits - before[0], c.misses - before[1]
      out["memory_warm"] = dict(warm, cold=False, cache_hit_rate=hits / max(hits + misses, 1))
    else:
      out["memory"] = dict(measure(gen, prompts, new_tokens, runs, memory_fn=memory_fn), cold=False)
  if rag_prompts is not None:
    out["rag"] = measure(gen, rag_prompts, new_tokens, runs)
  return out
