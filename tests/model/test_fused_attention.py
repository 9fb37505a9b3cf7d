"""Fused memory attention (XLA flat, Pallas splash) equals the dense two-part softmax.

The splash kernel is the real Pallas TPU kernel run in interpret mode on CPU. Float32:
the fused forms sum the same terms in another order (online softmax in tiles), so they
agree with the dense reference to float32 rounding; tolerance 1e-5 relative to the
largest magnitude of each compared array.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m3jax.model import splash_attention as splash
from m3jax.model.joint_attention import Causal, joint_attention, resolve_impl

TOL = 1e-5
B, H, KV, D = 2, 4, 2, 8
CHUNK, R, M = 8, 2, 3


def _close(a, b, what):
  a, b = np.asarray(a), np.asarray(b)
  err = float(np.abs(a - b).max()) / max(float(np.abs(b).max()), 1e-30)
  assert err < TOL, f"{what}: relative error {err:.2e}"


def _inputs(t, chunks, offset, seed=0):
  ks = jax.random.split(jax.random.key(seed), 6)
  s = t + offset
  q = jax.random.normal(ks[0], (B, t, H, D)) * 2.0  # peaked softmax
  k = jax.random.normal(ks[1], (B, s, KV, D))
  v = jax.random.normal(ks[2], (B, s, KV, D))
  if not chunks:
    return q, k, v, None
  mk = jax.random.normal(ks[3], (B, chunks, R, KV, M, D))
  mv = jax.random.normal(ks[4], (B, chunks, R, KV, M, D))
  mask = jax.random.bernoulli(ks[5], 0.7, (B, chunks, R, M))
  mask = mask.at[0, -1].set(False)  # one chunk with no valid memory at all
  return q, k, v, (mk, mv, mask)


def _reference_mask(t, s_ctx, offset, mem_mask):
  """Naive [B, T, S + C·R·M] mask: causal context, then each query's own chunk."""
  ctx = np.arange(s_ctx)[None, :] <= np.arange(t)[:, None] + offset
  ctx = np.broadcast_to(ctx, (B, t, s_ctx))
  if mem_mask is None:
    return ctx
  c = mem_mask.shape[1]
  own = np.zeros((B, t, c * R * M), bool)
  for i in range(t):
    ci = 0 if c == 1 else i // CHUNK
    own[:, i, ci * R * M : (ci + 1) * R * M] = np.asarray(mem_mask[:, ci]).reshape(B, R * M)
  return np.concatenate([ctx, own], -1)


@pytest.mark.integration
@pytest.mark.parametrize("t,chunks,offset", [(20, 1, 1), (130, 17, 1)])
def test_splash_mask_encodes_the_reference_mask(t, chunks, offset):
  _, k, _, mem = _inputs(t, chunks, offset)
  s_ctx = k.shape[1]
  static = splash.static_mask(t, s_ctx, offset, chunks, R * M, CHUNK)
  assert static.shape[0] % 128 == 0 and static.shape[1] % 128 == 0
  mem_mask = None if mem is None else mem[2].reshape(B, -1)
  q_ids, kv_ids = splash.segment_ids(B, t, s_ctx, mem_mask, static.shape)
  dense = np.asarray(splash.dense_equivalent(static, q_ids, kv_ids))
  ref = _reference_mask(t, s_ctx, offset, None if mem is None else mem[2])
  np.testing.assert_array_equal(dense[:, :t, : ref.shape[2]], ref)
  assert not dense[:, :, ref.shape[2] :].any(), "padding keys must be masked"
  assert dense.any(-1).all(), "every (padded) query row needs a visible key"


def _attend(impl, q, k, v, offset, mem):
  return joint_attention(q, k, v, Causal(offset), mem, chunk_len=CHUNK, impl=impl)


def _check(impl, t, chunks, offset, grads=True):
  q, k, v, mem = _inputs(t, chunks, offset)
  _close(
    _attend(impl, q, k, v, offset, mem), _attend("dense", q, k, v, offset, mem), f"{impl} forward"
  )
  if not grads:
    return
  w = jax.random.normal(jax.random.key(7), q.shape)
  mem_mask = None if mem is None else mem[2]

  def loss(impl):
    def f(q, k, v, mem_kv):
      memory = None if mem_kv is None else (*mem_kv, mem_mask)
      return jnp.sum(_attend(impl, q, k, v, offset, memory) * w)

    return jax.jit(jax.grad(f, argnums=(0, 1, 2, 3)))

  args = (q, k, v, None if mem is None else mem[:2])
  g_ref, g = loss("dense")(*args), loss(impl)(*args)
  names = ["q", "k", "v", "memory keys", "memory values"]
  for name, a, b in zip(names, jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(g_ref)):
    _close(a, b, f"{impl} d/d{name}")


@pytest.mark.integration
@pytest.mark.parametrize("t,chunks,offset", [(20, 3, 1), (20, 1, 1), (12, 0, 0)])
def test_flat_xla_attention_equals_dense_forward_and_gradients(t, chunks, offset):
  _check("flat", t, chunks, offset)


@pytest.mark.integration
def test_splash_kernel_equals_dense_forward_and_gradients():
  _check("splash_interpret", 20, 3, 1)


@pytest.mark.integration
def test_splash_kernel_encoding_layout_forward():
  _check("splash_interpret", 9, 0, 0, grads=False)


@pytest.mark.integration
def test_impls_resolve_and_splash_needs_a_causal_layout():
  assert resolve_impl("auto") == "flat"  # CPU
  q, k, v, _ = _inputs(4, 0, 1)
  with pytest.raises(ValueError, match="Causal"):
    joint_attention(q, k, v, jnp.ones((B, 4, 5), bool), impl="splash")
  with pytest.raises(ValueError, match="not one of"):
    joint_attention(q, k, v, Causal(1), impl="flash")


def test_computed_pairs_counts_the_tiles_the_kernel_visits():
  """Hand-counted 128 × 128 tiles: slot s is visible to query q when s <= q + offset."""
  tile = splash.BLOCK**2
  # t=256, 257 slots (sink + context): query tile 0 reaches slot 128 (key tile 1), query
  # tile 1 reaches slot 256 (key tile 2): 2 + 3 tiles; the all-masked (0, 2) is skipped.
  assert splash.computed_pairs(256, 257, 1, 0, 0, 64) == 5 * tile
  # Encoding 129 slots, offset 0: 2 query tiles (the 129th query pads a tile) x 2 key
  # tiles, less the all-masked upper right: 3 tiles for 129·130/2 real pairs.
  assert splash.computed_pairs(129, 129, 0, 0, 0, 64) == 3 * tile
  # Two chunks of 64 queries, 40 memory slots each, after 129 context slots: one query
  # tile; key tiles 0 and 1 (slots 128..255 hold slot 128 and the memories).
  assert splash.computed_pairs(128, 129, 1, 2, 40, 64) == 2 * tile
  # One chunk of 200 memory slots after 256 context slots: context tiles 0 and 1 (slot
  # 128), none of slots 129..255, memory slots 256..455 in key tiles 2 and 3.
  assert splash.computed_pairs(128, 256, 1, 1, 200, 64) == 4 * tile
  # Four chunks of 64 queries in t=256: query tile 1 (chunks 2, 3) reads memory slots
  # 257 + 2·100 .. 656, key tiles 3..5; query tile 0 reads slots 257..456, tiles 2..3.
  assert splash.computed_pairs(256, 257, 1, 4, 100, 64) == (2 + 2) * tile + (3 + 3) * tile


def test_kernel_shards_query_and_kv_heads_alike_under_tensor_parallelism():
  """With heads on the tensor axis, each shard's kernel gets its query heads *and* their
  KV heads (GQA groups stay whole): both specs name the tensor axis."""
  from jax.sharding import PartitionSpec as P

  from m3jax import sharding

  mesh = sharding.make_mesh((1, 2, 2), devices=jax.devices()[:4])
  with sharding.activate(mesh, sharding.DEFAULT_RULES):
    qs, ks, ids, head_shards = splash._mesh_specs(mesh)
  assert qs == P(("data", "fsdp"), "tensor", None, None)
  assert ks == P(("data", "fsdp"), "tensor", None, None)
  assert ids == P(("data", "fsdp"), None) and head_shards == 2
