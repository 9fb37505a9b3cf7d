"""Joint attention over [<ref> sink] ∪ [memories of the query's chunk] ∪ [causal context].

Eq. (4) of the paper: one softmax across memory keys and context keys, no new
parameters. The memory part is vectorized over chunks (queries reshaped to
``[B, C, chunk, …]``), never a Python loop. The softmax is written in two parts
(context and memory share one max and one denominator) so that a fully masked
memory contributes exact zeros and the output is bitwise the memory-free one. That dense form is the reference; the fused forms (``impl``) run the
same Eq. (4) as one attention kernel without a [T, S] score matrix in HBM: cuDNN flash
attention on GPU, a Pallas kernel on TPU (m3jax's own flash kernel, or the library's
splash attention: m3jax.model.splash_attention), XLA elsewhere.
"""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp

from m3jax.model import splash_attention as splash
from m3jax.model.config import ATTENTION_IMPLS


def _masked(logits, mask):
  return jnp.where(mask, logits, jnp.finfo(logits.dtype).min)


def _queries_by_chunk(q_BxTxKxGxD, num_chunks: int, chunk_len: int):
  """[B, T, …] -> [B, C, Tc, …]; C == 1 takes every query (decode/prefill of one chunk)."""
  b, t = q_BxTxKxGxD.shape[:2]
  if num_chunks == 1:
    return q_BxTxKxGxD[:, None]
  if t > num_chunks * chunk_len or t <= (num_chunks - 1) * chunk_len:
    raise ValueError(f"{t} queries need ceil({t}/{chunk_len}) memory chunks, got {num_chunks}")
  pad = num_chunks * chunk_len - t
  q = jnp.pad(q_BxTxKxGxD, [(0, 0), (0, pad)] + [(0, 0)] * 3)
  return q.reshape(b, num_chunks, chunk_len, *q.shape[2:])


IMPLS = ATTENTION_IMPLS  # one list of names (m3jax.model.config validates configs with it)
KERNEL_IMPLS = ("splash", "splash_interpret", "flash", "flash_interpret")  # need Causal


def on_kernel(impl: str) -> bool:
  """Whether ``impl`` runs one of the Pallas TPU kernels (m3jax.model.splash_attention)."""
  return impl in KERNEL_IMPLS


def kernel_of(impl: str) -> str | None:
  """The Pallas kernel an attention impl runs ("splash", "flash"), or None (XLA)."""
  return impl.removesuffix("_interpret") if on_kernel(impl) else None


@dataclasses.dataclass(frozen=True)
class Causal:
  """The mask of a fresh causal context: query t sees key slots s <= t + offset.

  ``Causal(1)``: the training forward (slot 0 the ``<ref>`` sink, slot s context token
  s - 1); ``Causal(0)``: reference encoding (``[<ref>, r_1 …]``). Kernels that build
  their own mask (splash) need this form; the others get ``dense(b, t, s)``.
  """

  offset: int = 0

  def dense(self, b: int, t: int, s: int):
    mask_TxS = jnp.arange(s)[None, :] <= jnp.arange(t)[:, None] + self.offset
    return jnp.broadcast_to(mask_TxS, (b, t, s))


def resolve_impl(impl: str) -> str:
  """``auto`` -> the fused kernel of the default backend: cudnn on GPU, m3jax's own
  flash kernel on TPU (fused backward; splash stays selectable by name), flat (XLA)
  elsewhere. Other names pass through. (An ahead-of-time TPU compile traced on a CPU host
  must name the kernel: inside ``jit`` the target devices are unknown; ``aot.for_tpu``.)"""
  if impl not in IMPLS:
    raise ValueError(f"attention impl {impl!r} is not one of {IMPLS}")
  if impl != "auto":
    return impl
  return {"gpu": "cudnn", "cuda": "cudnn", "tpu": "flash"}.get(jax.default_backend(), "flat")


def impl_for_cache(impl: str) -> str:
  """The impl for attention over a KV cache (arbitrary mask): splash needs ``Causal``."""
  impl = resolve_impl(impl)
  return "flat" if on_kernel(impl) else impl


def impl_for_short_causal(impl: str, t: int) -> str:
  """The impl for causal self-attention of ``t`` tokens with no memory (the live encoder's
  references): splash only where its 128-tiles compute fewer query-key pairs than a dense
  softmax's t², else XLA ("flat"). A 129-token reference pads to 3 tiles, 3x the dense
  pairs (6x App. A's causal half); a 2,049-slot training row computes 0.6x the dense."""
  impl = resolve_impl(impl)
  if on_kernel(impl) and splash.computed_pairs(t, t, 0, 0, 0, 1) >= t * t:
    return "flat"
  return impl


def joint_attention(
  q_BxTxHxD,
  k_BxSxKxD,
  v_BxSxKxD,
  mask_BxTxS,
  memory=None,
  *,
  chunk_len: int = 64,
  return_memory_mass: bool = False,
  impl: str = "dense",
):
  """Attention of T queries over S context slots and (optionally) chunked memories.

  Args:
    q_BxTxHxD: queries, RoPE already applied.
    k_BxSxKxD, v_BxSxKxD: context keys/values; the caller puts the ``<ref>`` sink in
      one of the slots (slot 0) and marks it visible in the mask.
    mask_BxTxS: True where query t may attend slot s (causality, cache validity), or a
      ``Causal`` layout.
    memory: None, or (keys_BxCxRxKxMxD, values_BxCxRxKxMxD, mask_BxCxRxM).
    chunk_len: query tokens per memory chunk.
    return_memory_mass: also return the attention probability on memory, [B, T, H].
    impl: "dense" (two-part softmax written out; exact no-memory equivalence),
      "flat" (one fused ``jax.nn.dot_product_attention`` call over [context, all chunks'
      memories] with a block mask; XLA), "cudnn" (the same call on cuDNN flash attention:
      for long bf16 training sequences on GPU), "splash" (Pallas TPU kernel, needs a
      ``Causal`` mask; m3jax.model.splash_attention; "splash_interpret" runs it in Pallas
      interpret mode anywhere), "flash" / "flash_interpret" (m3jax's own Pallas kernel on
      the same layout, with a fused backward: m3jax.model.flash_kernel), "auto" (``resolve_impl``). The memory mass
      needs "dense" (asking for it selects it).

  Returns:
    out_BxTxHxD (and memory mass if asked).
  """
  impl = "dense" if return_memory_mass else resolve_impl(impl)
  b, t = q_BxTxHxD.shape[:2]
  if isinstance(mask_BxTxS, Causal):
    kernel = kernel_of(impl)
    if kernel is not None:
      return splash.splash_joint_attention(
        q_BxTxHxD,
        k_BxSxKxD,
        v_BxSxKxD,
        mask_BxTxS.offset,
        memory,
        chunk_len=chunk_len,
        interpret=impl.endswith("_interpret"),
        kernel=kernel,
      )
    mask_BxTxS = mask_BxTxS.dense(b, t, k_BxSxKxD.shape[1])
  elif on_kernel(impl):
    raise ValueError(
      f"{impl} attention needs a Causal(offset) mask (fresh causal context); "
      "use impl_for_cache() for attention over a KV cache"
    )
  if impl != "dense":
    try:
      return _flat_attention(
        q_BxTxHxD,
        k_BxSxKxD,
        v_BxSxKxD,
        mask_BxTxS,
        memory,
        chunk_len,
        "cudnn" if impl == "cudnn" else "xla",
      )
    except (NotImplementedError, RuntimeError) as e:
      # cuDNN rejects some shapes/dtypes/backends while tracing; the dense path is exact.
      if impl != "cudnn":
        raise
      warnings.warn(f"cuDNN attention unavailable here ({e}); using the dense path")
  b, t, h, d = q_BxTxHxD.shape
  kv = k_BxSxKxD.shape[2]
  g = h // kv
  q = (q_BxTxHxD * (d**-0.5)).reshape(b, t, kv, g, d)
  f32 = jnp.float32

  ctx_BxKxGxTxS = jnp.einsum("btkgd,bskd->bkgts", q, k_BxSxKxD, preferred_element_type=f32)
  ctx_BxKxGxTxS = _masked(ctx_BxKxGxTxS, mask_BxTxS[:, None, None])
  peak = jnp.max(ctx_BxKxGxTxS, axis=-1, keepdims=True)

  if memory is not None:
    mem_k, mem_v, mem_mask_BxCxRxM = memory
    c, r, m = mem_k.shape[1], mem_k.shape[2], mem_k.shape[4]
    qc = _queries_by_chunk(q, c, chunk_len)  # [B, C, Tc, K, G, D]
    tc = qc.shape[2]
    mem_BxKxGxCxTcxRxM = jnp.einsum("bcskgd,bcrkmd->bkgcsrm", qc, mem_k, preferred_element_type=f32)
    mem_BxKxGxCxTcxRxM = _masked(mem_BxKxGxCxTcxRxM, mem_mask_BxCxRxM[:, None, None, :, None])
    mem_BxKxGxTxRM = mem_BxKxGxCxTcxRxM.reshape(b, kv, g, c * tc, r * m)[:, :, :, :t]
    peak = jnp.maximum(peak, jnp.max(mem_BxKxGxTxRM, axis=-1, keepdims=True))

  peak = jax.lax.stop_gradient(peak)
  ctx_p = jnp.exp(ctx_BxKxGxTxS - peak)
  denom = jnp.sum(ctx_p, axis=-1, keepdims=True)
  if memory is not None:
    mem_p = jnp.exp(mem_BxKxGxTxRM - peak)
    denom = denom + jnp.sum(mem_p, axis=-1, keepdims=True)
  ctx_p = (ctx_p / denom).astype(v_BxSxKxD.dtype)
  out_BxTxKxGxD = jnp.einsum("bkgts,bskd->btkgd", ctx_p, v_BxSxKxD)

  mass_BxTxH = None
  if memory is not None:
    mem_p = mem_p / denom
    mass_BxTxH = jnp.sum(mem_p, axis=-1).transpose(0, 3, 1, 2).reshape(b, t, h)
    mem_p = mem_p.astype(mem_v.dtype).reshape(b, kv, g, t, r, m)
    mem_p = jnp.pad(mem_p, [(0, 0)] * 3 + [(0, c * tc - t), (0, 0), (0, 0)])
    mem_p = mem_p.reshape(b, kv, g, c, tc, r, m)
    mem_out = jnp.einsum("bkgcsrm,bcrkmd->bcskgd", mem_p, mem_v)
    mem_out = mem_out.reshape(b, c * tc, kv, g, d)[:, :t]
    out_BxTxKxGxD = out_BxTxKxGxD + mem_out
  out = out_BxTxKxGxD.reshape(b, t, h, d).astype(q_BxTxHxD.dtype)
  if return_memory_mass:
    if mass_BxTxH is None:
      mass_BxTxH = jnp.zeros((b, t, h), jnp.float32)
    return out, mass_BxTxH
  return out


def _flat_attention(
  q_BxTxHxD, k_BxSxKxD, v_BxSxKxD, mask_BxTxS, memory, chunk_len: int, implementation: str
):
  """One fused attention call: every chunk's memories appended as extra keys, masked so
  that a query sees only its own chunk's. Costs C·R·M more keys per query, but runs as a
  single flash-attention kernel (forward and backward) on GPU."""
  b, t = q_BxTxHxD.shape[:2]
  keys, values, mask = k_BxSxKxD, v_BxSxKxD, mask_BxTxS
  if memory is not None:
    mem_k, mem_v, mem_mask_BxCxRxM = memory
    c, r, kv, m, d = mem_k.shape[1:]
    flat = lambda x: x.transpose(0, 1, 2, 4, 3, 5).reshape(b, c * r * m, kv, d)
    keys = jnp.concatenate([keys, flat(mem_k).astype(keys.dtype)], axis=1)
    values = jnp.concatenate([values, flat(mem_v).astype(values.dtype)], axis=1)
    q_chunk_T = jnp.zeros((t,), jnp.int32) if c == 1 else jnp.arange(t) // chunk_len
    key_chunk = jnp.repeat(jnp.arange(c), r * m)
    mem_mask = (q_chunk_T[:, None] == key_chunk[None, :])[None] & mem_mask_BxCxRxM.reshape(
      b, 1, c * r * m
    )
    mask = jnp.concatenate([mask, mem_mask], axis=-1)
  if implementation == "cudnn":
    # cuDNN's flash kernels want the key length in whole tiles: pad with masked keys.
    pad = -keys.shape[1] % 128
    if pad:
      widen = lambda x: jnp.pad(x, [(0, 0), (0, pad), (0, 0), (0, 0)])
      keys, values = widen(keys), widen(values)
      mask = jnp.pad(mask, [(0, 0), (0, 0), (0, pad)])
  out = jax.nn.dot_product_attention(
    q_BxTxHxD, keys, values, mask=mask[:, None], implementation=implementation
  )
  return out.astype(q_BxTxHxD.dtype)
