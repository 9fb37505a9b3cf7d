"""m3jax's own Pallas TPU flash attention: block-sparse, a sink logit, a fused backward.

The kernel behind ``attention_impl="flash"`` (m3jax.model.splash_attention does the
layout: slot 0 merged out as the sink, memories appended as key blocks, padding). It
exists for two things the library's splash kernel cannot give at once (docs/tpu.md):

* **a fused backward**: one call per layer computes dq, dk and dv with 5 matmuls per
  query-key pair (s = q·kᵀ, dv += pᵀ·do, dp = do·vᵀ, dk += dsᵀ·q, dq += ds·k), where
  splash's separate dq and dkv kernels do 7. KV tiles are the outer loop (dk, dv
  accumulate in VMEM across the query tiles that see them); the whole dq of one (batch
  row, head), float32 [Tp, D] (640 KiB at the paper's T = 2,048, d_h = 80), stays in
  VMEM across the KV loop and is written once (no per-KV-tile partials: the fused splash
  backward's float32 dq partials did not fit a v5e's HBM);
* **outputs a remat policy can keep**: the forward returns its output and the
  logsumexp named ``attention_out`` / ``attention_lse`` (``jax.ad_checkpoint``), so
  ``model.remat_policy="dots_attention_out"`` saves them and the backward never runs
  the forward kernel again.

Layout (``Layout``): q [B, H, Tp, D] already scaled by d^-1/2, k and v [B, K, Sp, D]
(query head h reads KV head h // (H / K)), ``valid`` [B, 1, Sp] int32 (1 = a context
slot or a valid memory token). Kernel key j is a context slot when j < ctx (query t
sees it when j <= t + offset - 1), else memory token j - ctx of chunk (j - ctx) //
per_chunk, seen by the queries of that chunk (every query when chunks == 1). Every
query also sees the sink: logit 0, value 0 (the online softmax starts from it:
max 0, sum 1), so a query with no visible key returns 0. Tiles of the static mask with
no allowed entry are never visited (scalar-prefetched tile lists per query tile and
per KV tile); the elementwise mask is rebuilt from the layout inside visited tiles.

``interpret=True`` runs the same kernels in Pallas's TPU interpret mode on any backend
(how the CPU tests check them against the dense reference).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

BLOCK = 128  # query and key tile
LANES = 128  # logsumexp and row statistics are kept lane-replicated, as TPU rows
MATMULS_FWD, MATMULS_BWD = 2, 5  # per computed query-key pair
OUT_NAME, LSE_NAME = "attention_out", "attention_lse"  # residual names for remat policies
_MASKED = -1e30  # a masked logit: exp(_MASKED - m) == 0 for the sink's m >= 0


def _floordiv(x, n: int):
  """x // n for int32 positions; in a kernel through float32 (exact below 2^22: the
  quotient of x + 0.5 stays at least 0.5 / n away from an integer), since Mosaic has no
  vector integer division."""
  if isinstance(x, np.ndarray):
    return x // n
  return jnp.floor((x.astype(jnp.float32) + 0.5) * (1.0 / n)).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class Layout:
  """The data-independent mask: ``t`` real queries (of ``tp``), ``ctx`` context keys
  then ``chunks`` blocks of ``per_chunk`` memory keys (of ``sp``)."""

  t: int
  tp: int
  sp: int
  ctx: int
  offset: int
  chunks: int
  per_chunk: int
  chunk_len: int

  def allowed(self, q_pos, k_pos):
    """Elementwise mask for query positions ``q_pos`` and key positions ``k_pos``
    (broadcasting int32 arrays; numpy or jax)."""
    causal = (k_pos < self.ctx) & (k_pos <= q_pos + (self.offset - 1))
    if not self.chunks:
      return causal & (q_pos < self.t)
    mem = k_pos - self.ctx
    q_chunk = 0 * q_pos if self.chunks == 1 else _floordiv(q_pos, self.chunk_len)
    own = (
      (mem >= 0)
      & (mem < self.chunks * self.per_chunk)
      & (_floordiv(mem, self.per_chunk) == q_chunk)
    )
    return (causal | own) & (q_pos < self.t)

  def tiles(self) -> np.ndarray:
    """[Tp/BLOCK, Sp/BLOCK] bool: the tiles with at least one allowed pair."""
    mask = self.allowed(np.arange(self.tp)[:, None], np.arange(self.sp)[None, :])
    nq, nk = self.tp // BLOCK, self.sp // BLOCK
    return mask.reshape(nq, BLOCK, nk, BLOCK).any(axis=(1, 3))


def tile_lists(tiles_QxK: np.ndarray):
  """(index [rows, width], count [rows]) int32: the columns set in each row, padded with
  the row's last one (the pipeline then fetches nothing new for the skipped steps)."""
  counts = tiles_QxK.sum(axis=1).astype(np.int32)
  width = max(int(counts.max(initial=0)), 1)
  index = np.zeros((tiles_QxK.shape[0], width), np.int32)
  for r, row in enumerate(tiles_QxK):
    cols = np.flatnonzero(row)
    if cols.size:
      index[r, : cols.size], index[r, cols.size :] = cols, cols[-1]
  return index, counts


def _tile_mask(layout: Layout, q_tile, k_tile, valid_1xK):
  q_pos = q_tile * BLOCK + jax.lax.broadcasted_iota(jnp.int32, (BLOCK, BLOCK), 0)
  k_pos = k_tile * BLOCK + jax.lax.broadcasted_iota(jnp.int32, (BLOCK, BLOCK), 1)
  return layout.allowed(q_pos, k_pos) & (valid_1xK > 0)


def _dot_t(a, b):  # a · bᵀ in float32
  return jax.lax.dot_general(a, b, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)


def _fwd_kernel(
  layout, idx_ref, cnt_ref, q_ref, k_ref, v_ref, valid_ref, o_ref, lse_ref, m_scr, l_scr, acc_scr
):
  i, jj = pl.program_id(2), pl.program_id(3)

  @pl.when(jj == 0)
  def _():  # the sink: logit 0, value 0
    m_scr[...] = jnp.zeros_like(m_scr)
    l_scr[...] = jnp.ones_like(l_scr)
    acc_scr[...] = jnp.zeros_like(acc_scr)

  @pl.when(jj < cnt_ref[i])
  def _():
    s = _dot_t(q_ref[...], k_ref[...])
    s = jnp.where(_tile_mask(layout, i, idx_ref[i, jj], valid_ref[...]), s, _MASKED)
    m_prev = m_scr[...]
    m_new = jnp.maximum(m_prev, jnp.max(s, axis=1, keepdims=True))
    alpha = jnp.exp(m_prev - m_new)
    p = jnp.exp(s - m_new[:, :1])
    l_scr[...] = alpha * l_scr[...] + jnp.sum(p, axis=1, keepdims=True)
    pv = jnp.dot(p.astype(v_ref.dtype), v_ref[...], preferred_element_type=jnp.float32)
    acc_scr[...] = alpha[:, :1] * acc_scr[...] + pv
    m_scr[...] = m_new

  @pl.when(jj == pl.num_programs(3) - 1)
  def _():
    l = l_scr[...]
    o_ref[...] = (acc_scr[...] / l[:, :1]).astype(o_ref.dtype)
    lse_ref[...] = m_scr[...] + jnp.log(l)


def _bwd_kernel(
  layout,
  idx_ref,
  cnt_ref,
  q_ref,
  k_ref,
  v_ref,
  valid_ref,
  do_ref,
  lse_ref,
  di_ref,
  dk_ref,
  dv_ref,
  dq_ref,
  dk_scr,
  dv_scr,
):
  j, ii = pl.program_id(2), pl.program_id(3)

  @pl.when((j == 0) & (ii == 0))
  def _():  # this (batch row, head)'s dq stays in VMEM across the whole KV loop
    dq_ref[...] = jnp.zeros_like(dq_ref)

  @pl.when(ii == 0)
  def _():
    dk_scr[...] = jnp.zeros_like(dk_scr)
    dv_scr[...] = jnp.zeros_like(dv_scr)

  @pl.when(ii < cnt_ref[j])
  def _():
    i = idx_ref[j, ii]
    q, k, v, do = q_ref[...], k_ref[...], v_ref[...], do_ref[...]
    s = _dot_t(q, k)
    mask = _tile_mask(layout, i, j, valid_ref[...])
    p = jnp.where(mask, jnp.exp(s - lse_ref[...][:, :1]), 0.0)
    dv_scr[...] += jax.lax.dot_general(
      p.astype(do.dtype), do, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32
    )
    dp = _dot_t(do, v)
    ds = p * (dp - di_ref[...][:, :1])
    dk_scr[...] += jax.lax.dot_general(
      ds.astype(q.dtype), q, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32
    )
    rows = pl.ds(pl.multiple_of(i * BLOCK, BLOCK), BLOCK)
    dq_ref[rows, :] += jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32)

  @pl.when(ii == pl.num_programs(3) - 1)
  def _():
    dk_ref[...] = dk_scr[...].astype(dk_ref.dtype)
    dv_ref[...] = dv_scr[...].astype(dv_ref.dtype)


def _cost(tiles: np.ndarray, b: int, h: int, d: int, matmuls: int, nbytes: int) -> pl.CostEstimate:
  pairs = int(tiles.sum()) * BLOCK * BLOCK * b * h
  return pl.CostEstimate(
    flops=pairs * matmuls * 2 * d, transcendentals=pairs, bytes_accessed=int(nbytes)
  )


def _forward(layout: Layout, interpret: bool, q, k, v, valid):
  b, h, tp, d = q.shape
  group = h // k.shape[1]
  tiles = layout.tiles()
  idx, cnt = tile_lists(tiles)
  q_spec = pl.BlockSpec((None, None, BLOCK, d), lambda b, h, i, jj, idx, cnt: (b, h, i, 0))
  kv_spec = pl.BlockSpec(
    (None, None, BLOCK, d), lambda b, h, i, jj, idx, cnt: (b, h // group, idx[i, jj], 0)
  )
  valid_spec = pl.BlockSpec((None, 1, BLOCK), lambda b, h, i, jj, idx, cnt: (b, 0, idx[i, jj]))
  lse_spec = pl.BlockSpec((None, None, BLOCK, LANES), lambda b, h, i, jj, idx, cnt: (b, h, i, 0))
  nbytes = sum(x.size * x.dtype.itemsize for x in (q, k, v, q))
  out, lse = pl.pallas_call(
    functools.partial(_fwd_kernel, layout),
    grid_spec=pltpu.PrefetchScalarGridSpec(
      num_scalar_prefetch=2,
      grid=(b, h, tp // BLOCK, idx.shape[1]),
      in_specs=[q_spec, kv_spec, kv_spec, valid_spec],
      out_specs=[q_spec, lse_spec],
      scratch_shapes=[
        pltpu.VMEM((BLOCK, LANES), jnp.float32),
        pltpu.VMEM((BLOCK, LANES), jnp.float32),
        pltpu.VMEM((BLOCK, d), jnp.float32),
      ],
    ),
    out_shape=[
      jax.ShapeDtypeStruct(q.shape, q.dtype),
      jax.ShapeDtypeStruct((b, h, tp, LANES), jnp.float32),
    ],
    compiler_params=pltpu.CompilerParams(
      dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")
    ),
    cost_estimate=_cost(tiles, b, h, d, MATMULS_FWD, nbytes),
    interpret=interpret,
    name="m3jax_flash_fwd",
  )(jnp.asarray(idx), jnp.asarray(cnt), q, k, v, valid)
  return out, lse[..., 0]


def _backward(layout: Layout, interpret: bool, q, k, v, valid, out, lse_BxHxTp, do):
  b, h, tp, d = q.shape
  kv_heads, sp = k.shape[1], k.shape[2]
  group = h // kv_heads
  tiles = layout.tiles()
  idx, cnt = tile_lists(tiles.T)
  lanes = lambda x: jnp.broadcast_to(x[..., None], (*x.shape, LANES))
  di = jnp.sum(do.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)
  q_spec = pl.BlockSpec((None, None, BLOCK, d), lambda b, h, j, ii, idx, cnt: (b, h, idx[j, ii], 0))
  row_spec = pl.BlockSpec(
    (None, None, BLOCK, LANES), lambda b, h, j, ii, idx, cnt: (b, h, idx[j, ii], 0)
  )
  kv_spec = pl.BlockSpec(
    (None, None, BLOCK, d), lambda b, h, j, ii, idx, cnt: (b, h // group, j, 0)
  )
  dkv_spec = pl.BlockSpec((None, None, BLOCK, d), lambda b, h, j, ii, idx, cnt: (b, h, j, 0))
  valid_spec = pl.BlockSpec((None, 1, BLOCK), lambda b, h, j, ii, idx, cnt: (b, 0, j))
  dq_spec = pl.BlockSpec((None, None, tp, d), lambda b, h, j, ii, idx, cnt: (b, h, 0, 0))
  nbytes = sum(x.size * x.dtype.itemsize for x in (q, k, v, do, k, v)) + 4 * q.size
  dk, dv, dq = pl.pallas_call(
    functools.partial(_bwd_kernel, layout),
    grid_spec=pltpu.PrefetchScalarGridSpec(
      num_scalar_prefetch=2,
      grid=(b, h, sp // BLOCK, idx.shape[1]),
      in_specs=[q_spec, kv_spec, kv_spec, valid_spec, q_spec, row_spec, row_spec],
      out_specs=[dkv_spec, dkv_spec, dq_spec],
      scratch_shapes=[pltpu.VMEM((BLOCK, d), jnp.float32), pltpu.VMEM((BLOCK, d), jnp.float32)],
    ),
    out_shape=[
      jax.ShapeDtypeStruct((b, h, sp, d), jnp.float32),
      jax.ShapeDtypeStruct((b, h, sp, d), jnp.float32),
      jax.ShapeDtypeStruct(q.shape, jnp.float32),
    ],
    compiler_params=pltpu.CompilerParams(
      # dq of a query tile gathers every KV tile: the KV loop must not be split.
      dimension_semantics=("parallel", "parallel", "arbitrary", "arbitrary")
    ),
    cost_estimate=_cost(tiles, b, h, d, MATMULS_BWD, nbytes),
    interpret=interpret,
    name="m3jax_flash_bwd",
  )(jnp.asarray(idx), jnp.asarray(cnt), q, k, v, valid, do, lanes(lse_BxHxTp), lanes(di))
  per_kv = lambda x: x.reshape(b, kv_heads, group, sp, d).sum(axis=2).astype(k.dtype)
  return dq.astype(q.dtype), per_kv(dk), per_kv(dv)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def flash_attention(layout: Layout, interpret: bool, q, k, v, valid):
  """softmax([0 (sink), q·kᵀ masked by ``layout`` and ``valid``]) · [0, v] per query
  head: [B, H, Tp, D] in q's dtype (shapes in the module docstring)."""
  return _forward(layout, interpret, q, k, v, valid)[0]


def _vjp_fwd(layout, interpret, q, k, v, valid):
  out, lse = _forward(layout, interpret, q, k, v, valid)
  out, lse = checkpoint_name(out, OUT_NAME), checkpoint_name(lse, LSE_NAME)
  return out, (q, k, v, valid, out, lse)


def _vjp_bwd(layout, interpret, res, do):
  q, k, v, valid, out, lse = res
  dq, dk, dv = _backward(layout, interpret, q, k, v, valid, out, lse, do)
  return dq, dk, dv, None


flash_attention.defvjp(_vjp_fwd, _vjp_bwd)
