"""Decode throughput and time to first token: no memory, memory, RAG (Table 21 set-up).

One run, same weights, same prompts: batch B, P prompt tokens, N new tokens (no early
stop at eos), ``runs`` repetitions with the first dropped (compilation / warm-up).
Throughput = B·N / (time to first token + decode time), as the paper's 32×128 / time;
the decode-only rate is reported beside it. Memory retrieves every chunk_len tokens
through the real feeder (embed, index, bank read); RAG does one retrieval with the first
64-token chunk and prepends the R references' text, then decodes without memory.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from m3jax.inference.generate import Generator
from m3jax.inference.sampling import SamplingConfig


def measure(gen: Generator, prompts: Sequence[np.ndarray], new_tokens: int, runs: int,
            memory_fn=None) -> dict:
  stats = []
  for _ in range(max(runs, 2)):
    t0 = time.perf_counter()
    res = gen.generate(prompts, new_tokens, memory_fn=memory_fn)
    wall = time.perf_counter() - t0
    stats.append((wall, res.time_to_first_token, res.decode_seconds))
  wall, ttft, dec = (float(np.mean(x)) for x in zip(*stats[1:]))
  n = len(prompts) * new_tokens
  return {"tokens_per_s": n / wall, "decode_only_tokens_per_s": n / max(dec, 1e-9),
          "time_to_first_token_s": ttft, "wall_s": wall, "batch": len(prompts),
          "prompt_tokens": int(np.mean([len(p) for p in prompts])), "new_tokens": new_tokens}


def throughput(cfg, params, prompts: Sequence[np.ndarray], *, new_tokens: int, runs: int,
               memory_fn=None, rag_prompts: Sequence[np.ndarray] | None = None) -> dict:
  """-> {"no_memory": stats, "memory": stats, "rag": stats} (conditions given only)."""
  gen = Generator(cfg, params, sampling=SamplingConfig(), stop_at_eos=False)
  out = {"no_memory": measure(gen, prompts, new_tokens, runs)}
  if memory_fn is not None:
    out["memory"] = measure(gen, prompts, new_tokens, runs, memory_fn=memory_fn)
  if rag_prompts is not None:
    out["rag"] = measure(gen, rag_prompts, new_tokens, runs)
  return out
