"""Stage-2 memories from a training batch (SPEC §4.6, DESIGN "gradients in stage 2").

Each chunk of a training sequence retrieved ONE reference with its own text. With the
paper's window (``"chunks"``) chunk c attends to the references of chunks c-R+1..c (R =
refs_per_chunk; fewer for the first chunks, masked). With ``"similar"`` (not in the
paper; ``StageSpec.memory_window``) it attends to its own reference and the R-1 distinct
references of the batch that look most like it, as a retrieved top-R does at inference.
The B·C references are encoded live by the current parameters through the memory layers
only, top-k sparsified, and windowed into a MemoryKV.

Pure and jittable: the whole thing runs inside the train step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from m3jax.memory.encode import encode_references, to_memory_kv
from m3jax.model.memory_kv import MemoryKV
from m3jax.model.config import ModelConfig
from m3jax.train.stages import MEMORY_WINDOWS


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


# Bag-of-tokens buckets for "similar" windows: token id modulo this (the whole vocabulary
# at CPU sizes; a hashed bag at the paper's 60k).
SIMILAR_BUCKETS = 4096


def similar_windows(ref_tokens_BxCxN, ref_lengths_BxC, refs_per_chunk: int):
  """Own reference plus the R-1 most similar distinct references of the batch.

  Returns (ids_BxCxR, mask_BxCxR) into the flattened B·C axis, as :func:`chunk_windows`.
  Slot 0 is the chunk's own reference; slots 1..R-1 hold, by decreasing cosine of
  bag-of-tokens counts (valid tokens only), references of any chunk of the batch that
  differ from it token for token, one copy of each (the first in B·C order). A chunk
  without a reference reads nothing; slots without a candidate are masked. A training
  window then holds R different references, as the top-R a question retrieves does,
  never the same reference twice (a paper window holds a reference once per chunk that
  retrieved it: on the unseen world the chunk's own reference is there twice in 28% of
  the windows of look-alike 512-token rows; docs/design.md, "Session 31").
  O((B·C)²) in the batch: a CPU-scale study option, off in every config.
  """
  b, c, n = ref_tokens_BxCxN.shape
  m, r = b * c, refs_per_chunk
  tokens_MxN = ref_tokens_BxCxN.reshape(m, n)
  lengths_M = ref_lengths_BxC.reshape(m)
  valid_MxN = jnp.arange(n)[None, :] < lengths_M[:, None]
  present_M = lengths_M > 0
  buckets = jnp.where(valid_MxN, tokens_MxN % SIMILAR_BUCKETS, SIMILAR_BUCKETS)
  bags_MxV = jax.vmap(lambda t: jnp.bincount(t, length=SIMILAR_BUCKETS + 1))(buckets)
  bags_MxV = bags_MxV[:, :SIMILAR_BUCKETS].astype(jnp.float32)
  unit_MxV = bags_MxV / jnp.maximum(jnp.linalg.norm(bags_MxV, axis=-1, keepdims=True), 1e-6)
  cos_MxM = unit_MxV @ unit_MxV.T
  same_MxM = jnp.all(
    jnp.where(valid_MxN[:, None], tokens_MxN[:, None] == tokens_MxN[None], True), -1
  )
  same_MxM &= lengths_M[:, None] == lengths_M[None, :]
  first_copy_M = jnp.argmax(same_MxM, axis=1) == jnp.arange(m)  # argmax: the first True
  allowed_MxM = ~same_MxM & (first_copy_M & present_M)[None, :] & present_M[:, None]
  score_MxM = jnp.where(allowed_MxM, cos_MxM, -jnp.inf)
  top_score_MxK, top_ids_MxK = jax.lax.top_k(score_MxM, r - 1)
  ids_MxR = jnp.concatenate([jnp.arange(m)[:, None], top_ids_MxK], axis=1)
  mask_MxR = jnp.concatenate([present_M[:, None], top_score_MxK > -jnp.inf], axis=1)
  return ids_MxR.reshape(b, c, r), mask_MxR.reshape(b, c, r)


def memory_from_batch(
  params,
  cfg: ModelConfig,
  ref_tokens_BxCxN,
  ref_lengths_BxC,
  *,
  encode_grad: bool = True,
  rng=None,
  window: str = "chunks",
) -> MemoryKV:
  """Live-encoded MemoryKV [Lm, B, C, R, K, M, D] for a batch's references.

  encode_grad=False puts the encoded memories under stop_gradient (the cheaper
  ablation); with True gradients reach the encoder through the selected K/V (the
  selection indices are already under stop_gradient in sparsify). ``window``: which
  references each chunk reads, "chunks" (the paper's) or "similar" (module docstring).
  """
  b, c, n = ref_tokens_BxCxN.shape
  enc = encode_references(
    params, cfg, ref_tokens_BxCxN.reshape(b * c, n), ref_lengths_BxC.reshape(b * c), rng=rng
  )
  if not encode_grad:
    enc = jax.lax.stop_gradient(enc)
  r = cfg.memory.refs_per_chunk
  if window == "chunks":
    ids, mask = chunk_windows(ref_lengths_BxC, r)
  elif window == "similar":
    ids, mask = similar_windows(ref_tokens_BxCxN, ref_lengths_BxC, r)
  else:
    raise ValueError(f"memory window {window!r}: use one of {MEMORY_WINDOWS}")
  return to_memory_kv(enc, ids, mask)
