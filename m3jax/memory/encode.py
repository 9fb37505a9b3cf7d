"""Memory encoding: references -> sparse, RoPE-rotated explicit memories (paper §2).

``encode_references`` is pure and differentiable (stage 2 trains through it; the
selection indices sit under stop_gradient). Host-side batching lives in the bank build.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from m3jax.memory import sparsify
from m3jax.model.config import ModelConfig
from m3jax.model.transformer import Transformer


@flax.struct.dataclass
class EncodedMemories:
  """One explicit memory per reference (what a bank stores, before quantization).

  keys_BxLxKxMxD / values_BxLxKxMxD: per memory layer and kv head, the k kept tokens.
  mask_BxM: slot holds a real token. token_idx_BxLxKxM: kept reference positions (0-based
  into the reference tokens; RoPE position is that + 1), for inspection.
  """

  keys_BxLxKxMxD: jax.Array
  values_BxLxKxMxD: jax.Array
  mask_BxM: jax.Array
  token_idx_BxLxKxM: jax.Array


def encode_references(
  params,
  cfg: ModelConfig,
  ref_tokens_BxN,
  ref_lengths_B,
  *,
  selection: str | None = None,
  tokens_per_head: int | None = None,
  rng=None,
) -> EncodedMemories:
  """Encodes right-padded references with the model's own memory layers."""
  if not cfg.memory.memory_layers:
    raise ValueError("the model has no memory layers (model.memory.memory_layers is empty)")
  n = ref_tokens_BxN.shape[1]
  if n > cfg.memory.ref_len:
    raise ValueError(f"references of {n} tokens exceed memory.ref_len={cfg.memory.ref_len}")
  selection = selection or cfg.memory.selection
  k = tokens_per_head or cfg.memory.tokens_per_head
  enc = Transformer(cfg).apply({"params": params}, ref_tokens_BxN, method=Transformer.encode)
  valid_BxN = jnp.arange(n)[None, :] < ref_lengths_B[:, None]
  rngs = (
    jax.random.split(rng, cfg.memory.num_memory_layers)
    if rng is not None
    else [None] * cfg.memory.num_memory_layers
  )
  ref_keys_LxBxKxD: Any = None  # [L, B, K, D] (model.memory.reference_keys)
  if cfg.memory.reference_keys:
    ref_keys_LxBxKxD = Transformer(cfg).apply(
      {"params": params}, enc.k_raw_LxBxNxKxD, valid_BxN, method=Transformer.reference_keys
    )
  keys, values, idxs = [], [], []
  mask = None
  for l in range(cfg.memory.num_memory_layers):
    scores = sparsify.selection_scores(
      enc.q_raw_LxBxNxHxD[l], enc.k_raw_LxBxNxKxD[l], valid_BxN, selection, rngs[l]
    )
    idx_BxKxM, mask = sparsify.top_k_indices(scores, k)
    keys_BxKxMxD = sparsify.gather_tokens(enc.k_LxBxNxKxD[l], idx_BxKxM)
    if ref_keys_LxBxKxD is not None:
      keys_BxKxMxD = keys_BxKxMxD + ref_keys_LxBxKxD[l][:, :, None, :]
    keys.append(keys_BxKxMxD)
    values.append(sparsify.gather_tokens(enc.v_LxBxNxKxD[l], idx_BxKxM))
    idxs.append(idx_BxKxM)
  return EncodedMemories(jnp.stack(keys, 1), jnp.stack(values, 1), mask, jnp.stack(idxs, 1))


def to_memory_kv(enc: EncodedMemories, chunk_ref_ids_BxCxR, chunk_ref_mask_BxCxR):
  """Arranges encoded references (indexed along their batch axis) into a MemoryKV.

  chunk_ref_ids_BxCxR indexes ``enc``'s reference axis; masked entries are ignored.
  """
  from m3jax.model.memory_kv import MemoryKV

  ids = jnp.where(chunk_ref_mask_BxCxR, chunk_ref_ids_BxCxR, 0)
  k = enc.keys_BxLxKxMxD[ids]  # [B, C, R, L, K, M, D]
  v = enc.values_BxLxKxMxD[ids]
  mask = enc.mask_BxM[ids] & chunk_ref_mask_BxCxR[..., None]
  return MemoryKV(jnp.moveaxis(k, 3, 0), jnp.moveaxis(v, 3, 0), mask)
