"""Perplexity of held-out text with and without memory (teacher forcing, full forward).

Each sequence is read as a prompt: chunk c gets the memory its own text retrieves (the
prompt rule of generation, and the training convention ``train_query="own"``).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from m3jax.inference.generate import ChunkQuery, _arrange
from m3jax.model.config import ModelConfig
from m3jax.model.transformer import Transformer


def _nll_fn(cfg: ModelConfig):
  model = Transformer(cfg)

  @jax.jit
  def nll(params, tokens_BxT, lengths_B, memory):
    logits = model.apply({"params": params}, tokens_BxT, memory)
    logp = jax.nn.log_softmax(logits[:, :-1], -1)
    tok = jnp.take_along_axis(logp, tokens_BxT[:, 1:, None], -1)[..., 0]
    keep = jnp.arange(1, tokens_BxT.shape[1])[None] < lengths_B[:, None]
    return -jnp.sum(jnp.where(keep, tok, 0.0)), jnp.sum(keep)
  return nll


def sequences_from_stream(stream: np.ndarray, bos_id: int, seq_len: int, count: int):
  """``count`` sequences of ``seq_len`` tokens (``<s>`` + seq_len-1 stream tokens)."""
  n = seq_len - 1
  count = min(count, len(stream) // n)
  if count == 0:
    raise ValueError(f"held-out stream of {len(stream)} tokens is shorter than one "
                     f"sequence of {seq_len}")
  return [np.concatenate([[bos_id], stream[i * n:(i + 1) * n]]).astype(np.int32)
          for i in range(count)]


def perplexity(cfg: ModelConfig, params, sequences: Sequence[np.ndarray], memory_fn=None,
               batch_size: int = 8) -> float:
  """exp(mean next-token NLL) over all real tokens of ``sequences`` (right-padded)."""
  if not len(sequences):
    raise ValueError("perplexity needs at least one sequence")
  L = cfg.memory.chunk_len
  t = -(-max(len(s) for s in sequences) // L) * L
  fn = _nll_fn(cfg)
  total, count = 0.0, 0
  for s in range(0, len(sequences), batch_size):
    part = list(sequences[s:s + batch_size])
    n = len(part)
    part += [part[0][:1]] * (batch_size - n)            # 1-token rows add nothing
    tokens = np.full((batch_size, t), cfg.pad_id, np.int32)
    for i, seq in enumerate(part):
      tokens[i, :len(seq)] = seq
    lengths = np.array([len(x) for x in part], np.int32)
    mem = None
    if memory_fn is not None:
      queries, index = [], np.zeros((batch_size, t // L), np.int32)
      for i, seq in enumerate(part[:n]):
        for c in range(-(-len(seq) // L)):
          index[i, c] = len(queries) + 1
          queries.append(ChunkQuery(s + i, c, seq[c * L:(c + 1) * L]))
      m, _ = memory_fn(queries)
      mem = _arrange(m, jnp.asarray(index))
    nll, k = fn(params, jnp.asarray(tokens), jnp.asarray(lengths), mem)
    total += float(nll)
    count += int(k)
  return math.exp(total / max(count, 1))
