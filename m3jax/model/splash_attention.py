"""Joint attention as one Pallas TPU kernel: no [T, S] score matrix.

The layout below feeds either kernel: the library's splash attention
(``kernel="splash"``) or m3jax's own (``kernel="flash"``, m3jax.model.flash_kernel:
the same tiles, a fused backward, outputs a remat policy can keep).

The caller's keys are ``[slot 0 | context slots 1… | memories]``: slot 0 is ``<ref>`` (the
sink in the training forward, the reference's first token in encoding) and is visible to
every query; query t sees context slot s <= t + offset. **Slot 0 is merged outside the
kernel**: softmax is unchanged by subtracting one logit from a query's every logit, so
with ``k' = k - k_0`` and ``v' = v - v_0`` on every other key (memories included),

  attention(q, [k_0, k…], [v_0, v…]) = v_0 + attention(q, k', v', sink logit 0),

where the splash kernel's ``sinks`` argument (a per-head logit with a zero value) carries
slot 0's term, whose logit ``q·(k_0 - k_0)`` is 0 for every query. The kernel's keys
are then ``[context slots 1… | chunk 0's memories | chunk 1's … | padding]`` and query t
sees kernel slot j <= t + offset - 1: the causal diagonal falls on the tiles' diagonal
(a 2,048-token row visits 136 tiles of 128 × 128 instead of 152 with slot 0 inside).
Each chunk's R·M memory tokens form one contiguous block. The mask is two parts:

* a **static** block mask (a ``NumpyMask``, known at trace time): causal over the
  context, and query t sees the memory block of its chunk (t // chunk_len; every query
  sees chunk 0 when there is one chunk, as in decoding). The kernel skips every
  all-masked 128×128 tile, so the cost is the causal part plus one narrow band;
* **segment ids** for what depends on data: every query has id 0, a key has id 0 if it
  is a context slot or a valid memory token, 1 if it is a masked memory token or
  padding. The kernel ANDs both.

A query that sees no kernel key (encoding's first) reads slot 0 alone, through the sink.
Queries are padded to whole tiles (they see kernel slot 0; their outputs are dropped).
Under a mesh, the kernel runs per shard (``shard_map`` over the batch and head axes of
the active logical rules). ``interpret=True`` runs the same kernel in Pallas interpret
mode on any backend (slow; how the CPU tests check it).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from m3jax import axes
from m3jax.model import flash_kernel

BLOCK = 128  # splash tiles (query and key) are multiples of 128 lanes
KERNELS = ("splash", "flash")
assert flash_kernel.BLOCK == BLOCK  # one tiling, so computed_pairs counts either kernel


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def chunk_of_queries(t: int, chunks: int, chunk_len: int) -> np.ndarray:
  """The memory chunk each query reads (DESIGN "chunk rule")."""
  return np.zeros((t,), np.int32) if chunks == 1 else np.arange(t) // chunk_len


def padded_shape(t: int, kernel_keys: int) -> tuple[int, int]:
  """(Tp, Sp): queries and kernel keys (at least one) padded to whole tiles."""
  return _round_up(t, BLOCK), _round_up(max(kernel_keys, 1), BLOCK)


def static_mask(
  t: int, s_ctx: int, offset: int, chunks: int, per_chunk: int, chunk_len: int
) -> np.ndarray:
  """[Tp, Sp] bool over the kernel's keys (the caller's slot 0 merged out, see the module
  docstring): the data-independent part of the mask. ``s_ctx`` and ``offset`` are the
  caller's: ``s_ctx`` slots with slot 0, query t sees slot s <= t + offset."""
  ctx = s_ctx - 1  # kernel slot j is the caller's slot j + 1
  mask = np.zeros(padded_shape(t, ctx + chunks * per_chunk), bool)
  q = np.arange(t)
  mask[:t, :ctx] = np.arange(1, s_ctx)[None, :] <= q[:, None] + offset
  if chunks:
    key_chunk = np.arange(chunks * per_chunk) // per_chunk
    mask[:t, ctx : ctx + chunks * per_chunk] = (
      chunk_of_queries(t, chunks, chunk_len)[:, None] == key_chunk[None, :]
    )
  mask[t:, 0] = True  # padded queries: kernel slot 0 (outputs dropped)
  return mask


def computed_pairs(
  t: int, s_ctx: int, offset: int, chunks: int, per_chunk: int, chunk_len: int
) -> int:
  """Query-key pairs one head's kernel call computes: every BLOCK × BLOCK tile of the
  static mask with an allowed entry (all-masked tiles are skipped; data-dependent
  masking by segment ids happens inside computed tiles)."""
  mask = static_mask(t, s_ctx, offset, chunks, per_chunk, chunk_len)
  tp, sp = mask.shape
  tiles = mask.reshape(tp // BLOCK, BLOCK, sp // BLOCK, BLOCK).any(axis=(1, 3))
  return int(tiles.sum()) * BLOCK * BLOCK


def segment_ids(batch: int, t: int, s_ctx: int, mem_mask_BxN, static_shape):
  """(q_BxTp, kv_BxSp) int32 over the kernel's keys (caller's ``s_ctx`` slots less slot
  0, then memories): 0 = may attend, 1 = masked memory token or padding."""
  tp, sp = static_shape
  ctx = s_ctx - 1
  n = 0 if mem_mask_BxN is None else mem_mask_BxN.shape[1]
  kv = jnp.ones((batch, sp), jnp.int32).at[:, :ctx].set(0)
  if n:
    kv = kv.at[:, ctx : ctx + n].set(jnp.where(mem_mask_BxN, 0, 1))
  return jnp.zeros((batch, tp), jnp.int32), kv


def dense_equivalent(static_TpxSp, q_ids_BxTp, kv_ids_BxSp):
  """The [B, Tp, Sp] mask the kernel applies over its keys (for tests against the
  reference mask less its slot 0, which every query sees through the sink)."""
  same = q_ids_BxTp[:, :, None] == kv_ids_BxSp[:, None, :]
  return jnp.asarray(static_TpxSp)[None] & same


def _kernel(t, s_ctx, offset, chunks, per_chunk, chunk_len, heads, interpret):
  """The splash kernel for one mask layout, built in the calling trace (never cached: it
  holds its mask tables as arrays of the trace that built it, and a cached kernel handed
  a tracer to a later trace under remat)."""
  from jax.experimental.pallas.ops.tpu.splash_attention import (
    splash_attention_kernel as kernel,
    splash_attention_mask as masks,
  )

  mask = masks.NumpyMask(static_mask(t, s_ctx, offset, chunks, per_chunk, chunk_len))
  return kernel.make_splash_mha(
    masks.MultiHeadMask([mask] * heads), head_shards=1, q_seq_shards=1, interpret=interpret
  )


def _mesh_specs(mesh):
  """PartitionSpecs of q/k [B, H|K, T|S, D] and segment ids [B, T|S] under the rules."""
  # One call per array: the rules put query and KV heads on the same mesh axis, and one
  # logical_to_mesh_axes call gives a mesh axis to one logical axis only.
  batch, heads = nn.logical_to_mesh_axes((axes.BATCH, axes.HEADS))
  _, kv_heads = nn.logical_to_mesh_axes((axes.BATCH, axes.KV_HEADS))
  qs = PartitionSpec(batch, heads, None, None)
  ks = PartitionSpec(batch, kv_heads, None, None)
  ids = PartitionSpec(batch, None)
  shards = lambda name: (
    1
    if name is None
    else int(np.prod([mesh.shape[a] for a in ((name,) if isinstance(name, str) else name)]))
  )
  return qs, ks, ids, shards(heads)


def splash_joint_attention(
  q_BxTxHxD,
  k_BxSxKxD,
  v_BxSxKxD,
  offset: int,
  memory=None,
  *,
  chunk_len: int = 64,
  interpret: bool = False,
  kernel: str = "splash",
):
  """Joint attention (same result as ``joint_attention`` with a ``Causal(offset)`` mask,
  ``offset >= 0``: slot 0 is visible to every query and is merged outside the kernel),
  on the library's splash kernel or on m3jax's own ``flash`` kernel."""
  if kernel not in KERNELS:
    raise ValueError(f"kernel {kernel!r} is not one of {KERNELS}")
  if offset < 0:
    raise ValueError(f"splash attention needs slot 0 visible to every query; offset={offset}")
  b, t, h, d = q_BxTxHxD.shape
  s_ctx, kv_heads = k_BxSxKxD.shape[1], k_BxSxKxD.shape[2]
  k0_BxKxD, v0_BxKxD = k_BxSxKxD[:, 0], v_BxSxKxD[:, 0]
  keys, values, mem_mask_BxN, chunks, per_chunk = k_BxSxKxD[:, 1:], v_BxSxKxD[:, 1:], None, 0, 0
  if memory is not None:
    mem_k, mem_v, mem_mask_BxCxRxM = memory
    chunks, r, kv, m = mem_k.shape[1], mem_k.shape[2], mem_k.shape[3], mem_k.shape[4]
    per_chunk = r * m
    flat = lambda x: x.transpose(0, 1, 2, 4, 3, 5).reshape(b, chunks * per_chunk, kv, d)
    keys = jnp.concatenate([keys, flat(mem_k).astype(keys.dtype)], axis=1)
    values = jnp.concatenate([values, flat(mem_v).astype(values.dtype)], axis=1)
    mem_mask_BxN = mem_mask_BxCxRxM.reshape(b, chunks * per_chunk)
  # Every logit less q·k_0, every value less v_0: slot 0's term becomes the sink (logit 0).
  keys = keys - k0_BxKxD[:, None].astype(keys.dtype)
  values = values - v0_BxKxD[:, None].astype(values.dtype)
  tp, sp = padded_shape(t, keys.shape[1])
  q = jnp.pad(q_BxTxHxD * (d**-0.5), [(0, 0), (0, tp - t), (0, 0), (0, 0)])
  widen = lambda x: jnp.pad(x, [(0, 0), (0, sp - x.shape[1]), (0, 0), (0, 0)])
  q_BxHxTxD = q.transpose(0, 2, 1, 3)
  k_BxKxSxD, v_BxKxSxD = widen(keys).transpose(0, 2, 1, 3), widen(values).transpose(0, 2, 1, 3)
  q_ids, kv_ids = segment_ids(b, t, s_ctx, mem_mask_BxN, (tp, sp))

  layout = flash_kernel.Layout(t, tp, sp, s_ctx - 1, offset, chunks, per_chunk, chunk_len)

  def attend(q, k, v, q_ids, kv_ids, heads):
    if kernel == "flash":
      valid = (kv_ids == 0).astype(jnp.int32)[:, None]
      return flash_kernel.flash_attention(layout, interpret, q, k, v, valid)
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel

    kern = _kernel(t, s_ctx, offset, chunks, per_chunk, chunk_len, heads, interpret)
    sinks = jnp.zeros((heads,), jnp.float32)  # slot 0's logit after the shift
    one = lambda q, k, v, qi, ki: kern(
      q, k, v, segment_ids=splash_attention_kernel.SegmentIds(qi, ki), sinks=sinks
    )
    return jax.vmap(one)(q, k, v, q_ids, kv_ids)

  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    out = attend(q_BxHxTxD, k_BxKxSxD, v_BxKxSxD, q_ids, kv_ids, h)
  else:
    qs, ks, ids, head_shards = _mesh_specs(mesh)
    out = jax.shard_map(
      functools.partial(attend, heads=h // head_shards),
      mesh=mesh,
      in_specs=(qs, ks, ks, ids, ids),
      out_specs=qs,
      check_vma=False,
    )(q_BxHxTxD, k_BxKxSxD, v_BxKxSxD, q_ids, kv_ids)
  out_BxTxHxD = out.transpose(0, 2, 1, 3)[:, :t]
  # + v_0 for each query head (query head i reads KV head i // (H / K)).
  v0_BxHxD = jnp.repeat(v0_BxKxD, h // kv_heads, axis=1)
  return (out_BxTxHxD + v0_BxHxD[:, None].astype(out_BxTxHxD.dtype)).astype(q_BxTxHxD.dtype)
