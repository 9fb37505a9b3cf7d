"""Stage-2 memories from a training batch (SPEC §4.6, DESIGN "gradients in stage 2").

Each chunk of a training sequence retrieved ONE reference with its own text; chunk c
attends to the references of chunks c-R+1..c (R = refs_per_chunk; fewer for the first
chunks, masked). The B·C references are encoded live by the current parameters through
the memory layers only, top-k sparsified, and windowed into a MemoryKV.

Pure and jittable: the whole thing runs inside the train step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from m3jax.memory.encode import encode_references, to_memory_kv
from m3jax.model.memory_kv import MemoryKV
from m3jax.model.config import ModelConfig


def chunk_windows(ref_lengths_BxC, refs_per_chunk: int):
  """Which encoded reference each (chunk, slot) reads: ids into the flattened B·C axis.

  Returns (ids_BxCxR, mask_BxCxR). Slot r of chunk c holds the reference of chunk
  c - (R-1) + r (oldest first); slots before the sequence start or with ref_length 0
  are masked. (Whether chunk c's reference was retrieved with its own text or the
  previous chunk's is decided by the data: ``config.data.train_query``.)
  """
  b, c = ref_lengths_BxC.shape
  r = refs_per_chunk
  src_CxR = jnp.arange(c)[:, None] - (r - 1) + jnp.arange(r)[None, :]
  in_range_CxR = src_CxR >= 0
  src_CxR = jnp.clip(src_CxR, 0, c - 1)
  ids_BxCxR = jnp.arange(b)[:, None, None] * c + src_CxR[None]
  present_BxCxR = ref_lengths_BxC[:, src_CxR] > 0
  return ids_BxCxR, present_BxCxR & in_range_CxR[None]


def memory_from_batch(
  params, cfg: ModelConfig, ref_tokens_BxCxN, ref_lengths_BxC, *, encode_grad: bool = True, rng=None
) -> MemoryKV:
  """Live-encoded MemoryKV [Lm, B, C, R, K, M, D] for a batch's references.

  encode_grad=False puts the encoded memories under stop_gradient (the cheaper
  ablation); with True gradients reach the encoder through the selected K/V (the
  selection indices are already under stop_gradient in sparsify).
  """
  b, c, n = ref_tokens_BxCxN.shape
  enc = encode_references(
    params, cfg, ref_tokens_BxCxN.reshape(b * c, n), ref_lengths_BxC.reshape(b * c), rng=rng
  )
  if not encode_grad:
    enc = jax.lax.stop_gradient(enc)
  ids, mask = chunk_windows(ref_lengths_BxC, cfg.memory.refs_per_chunk)
  return to_memory_kv(enc, ids, mask)
