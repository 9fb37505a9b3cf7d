"""Perplexity of held-out text with and without memory (teacher forcing, full forward).

Which memory serves which chunk (``retrieval``):

* ``"causal"`` (the honest figure, reported as "memory"): chunk c reads the memories
  retrieved with chunk c-1's text, as decoding does after the prompt (a generated
  chunk's memories come from the last completed chunk); chunk 0 reads none (its only
  earlier text is ``<s>``). Retrieval never sees a token it is about to score.
* ``"own_text"`` (reported as "oracle_memory", an upper bound, not a fair figure): chunk c
  retrieves with its own text, i.e. with the very tokens it predicts; this is the
  training convention ``train_query="own"`` and what a retriever that has seen the
  answer would give. Kept to show how much of the gain is the peek.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from m3jax.model.config import ModelConfig
from m3jax.task import ChunkQuery, LMTask, gather_memory

RETRIEVAL = ("causal", "own_text")


def sequences_from_stream(stream: np.ndarray, bos_id: int, seq_len: int, count: int):
  """``count`` sequences of ``seq_len`` tokens (``<s>`` + seq_len-1 stream tokens)."""
  n = seq_len - 1
  count = min(count, len(stream) // n)
  if count == 0:
    raise ValueError(
      f"held-out stream of {len(stream)} tokens is shorter than one sequence of {seq_len}"
    )
  return [
    np.concatenate([[bos_id], stream[i * n : (i + 1) * n]]).astype(np.int32) for i in range(count)
  ]


def chunk_queries(seq: np.ndarray, row: int, chunk_len: int, retrieval: str = "causal"):
  """-> [(chunk index, ChunkQuery)] for the chunks of ``seq`` that get memory."""
  if retrieval not in RETRIEVAL:
    raise ValueError(f"retrieval={retrieval!r}: choose one of {RETRIEVAL}")
  L = chunk_len
  out = []
  for c in range(-(-len(seq) // L)):
    if retrieval == "own_text":
      out.append((c, ChunkQuery(row, c, np.asarray(seq[c * L : (c + 1) * L]))))
    elif c > 0:  # causal: the previous, complete chunk
      out.append((c, ChunkQuery(row, c, np.asarray(seq[(c - 1) * L : c * L]))))
  return out


def perplexity(
  cfg: ModelConfig,
  params,
  sequences: Sequence[np.ndarray],
  memory_fn=None,
  batch_size: int = 8,
  retrieval: str = "causal",
) -> float:
  """exp(mean next-token NLL) over all real tokens of ``sequences`` (right-padded).

  ``retrieval``: which text retrieves chunk c's memory (module docstring); "causal"
  unless you want the own-text oracle.
  """
  if not len(sequences):
    raise ValueError("perplexity needs at least one sequence")
  L = cfg.memory.chunk_len
  t = -(-max(len(s) for s in sequences) // L) * L
  score = LMTask.of(cfg).span_logprob
  total, count = 0.0, 0
  for s in range(0, len(sequences), batch_size):
    part = list(sequences[s : s + batch_size])
    n = len(part)
    part += [part[0][:1]] * (batch_size - n)  # 1-token rows add nothing
    tokens = np.full((batch_size, t), cfg.pad_id, np.int32)
    for i, seq in enumerate(part):
      tokens[i, : len(seq)] = seq
    lengths = np.array([len(x) for x in part], np.int32)
    mem = None
    if memory_fn is not None:
      plan = [[None] * (t // L) for _ in range(batch_size)]  # None = no memory
      for i, seq in enumerate(part[:n]):
        for c, q in chunk_queries(seq, s + i, L, retrieval):
          plan[i][c] = q
      got = gather_memory(memory_fn, plan)
      mem = None if got is None else got.memory
    logp = score(
      params, jnp.asarray(tokens), jnp.ones(batch_size, np.int32), jnp.asarray(lengths), mem
    )
    total -= float(np.sum(np.asarray(logp, np.float64)))
    count += int(np.sum(np.maximum(lengths - 1, 0)))
  return math.exp(total / max(count, 1))
