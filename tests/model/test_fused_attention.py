"""Fused memory attention (XLA flat, Pallas splash, m3jax's flash) equals the dense
two-part softmax.

The splash and flash kernels are the real Pallas TPU kernels run in interpret mode on CPU. Float32:
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
  # Slot 0 is visible to every query (so it can be merged out as the kernel's sink);
  # the kernel's keys are the reference's slots 1… in order.
  assert ref[:, :, 0].all()
  n = ref.shape[2] - 1
  np.testing.assert_array_equal(dense[:, :t, :n], ref[:, :, 1:])
  assert not dense[:, :, n:].any(), "padding keys must be masked"


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
def test_splash_kernel_across_tiles_equals_dense_forward_and_gradients():
  """Three query tiles and the diagonal across tile edges, memories in every chunk."""
  _check("splash_interpret", 300, 38, 1)


@pytest.mark.integration
def test_splash_kernel_encoding_layout_equals_dense():
  """Offset 0: query 0 sees slot 0 only, which the kernel carries as its sink."""
  _check("splash_interpret", 9, 0, 0)


def test_flash_kernel_equals_dense_forward_and_gradients():
  """m3jax's own kernel (fused backward) on the training layout: memories, 3 chunks."""
  _check("flash_interpret", 20, 3, 1)


@pytest.mark.integration
def test_flash_kernel_across_tiles_equals_dense_forward_and_gradients():
  """Three query tiles, the diagonal across tile edges, 38 chunks of memories (the dq of
  each query tile accumulates over several KV tiles)."""
  _check("flash_interpret", 300, 38, 1)


@pytest.mark.integration
def test_flash_kernel_one_chunk_and_encoding_layouts_equal_dense():
  """One memory chunk read by every query (decoding's layout), and offset 0 with no
  memory (encoding): query 0 sees no kernel key, only the sink."""
  _check("flash_interpret", 20, 1, 1)
  _check("flash_interpret", 9, 0, 0)


def test_splash_refuses_a_layout_without_slot_0_visible():
  q, k, v, _ = _inputs(4, 0, 0)
  with pytest.raises(ValueError, match="slot 0"):
    splash.splash_joint_attention(q, k, v, -1, interpret=True)


@pytest.mark.integration
def test_impls_resolve_and_splash_needs_a_causal_layout():
  assert resolve_impl("auto") == "flat"  # CPU
  q, k, v, _ = _inputs(4, 0, 1)
  with pytest.raises(ValueError, match="Causal"):
    joint_attention(q, k, v, jnp.ones((B, 4, 5), bool), impl="splash")
  with pytest.raises(ValueError, match="not one of"):
    joint_attention(q, k, v, Causal(1), impl="flashy")


def test_computed_pairs_counts_the_tiles_the_kernel_visits():
  """Hand-counted 128 × 128 tiles over the kernel's keys (the caller's slot 0 merged out
  as the sink): kernel slot j is the caller's slot j + 1, visible to query q when
  j + 1 <= q + offset."""
  tile = splash.BLOCK**2
  # t=256 after the sink: query q sees kernel slots j <= q, the tiles' own diagonal:
  # (0, 0), (1, 0), (1, 1). With the sink inside the kernel this was 5 tiles.
  assert splash.computed_pairs(256, 257, 1, 0, 0, 64) == 3 * tile
  # Encoding 129 slots, offset 0: query q sees j <= q - 1 (query 0 the sink alone); 2
  # query tiles (the 129th query pads one), 1 key tile (128 slots).
  assert splash.computed_pairs(129, 129, 0, 0, 0, 64) == 2 * tile
  # Two chunks of 64 queries, 40 memory slots each, after 128 kernel context slots: one
  # query tile; key tile 0 (context) and 1 (the memories, slots 128..207).
  assert splash.computed_pairs(128, 129, 1, 2, 40, 64) == 2 * tile
  # One chunk of 200 memory slots after 255 kernel context slots (0..254): the context
  # reaches tile 0 only; the memories (255..454) fill key tiles 1, 2 and 3.
  assert splash.computed_pairs(128, 256, 1, 1, 200, 64) == 4 * tile
  # Four chunks of 64 queries in t=256, 100 memory slots each after 256 context slots:
  # query tile 0 reads context tile 0 and memories 256..455 (tiles 2, 3); query tile 1
  # reads context tiles 0, 1 and memories 456..655 (tiles 3, 4, 5).
  assert splash.computed_pairs(256, 257, 1, 4, 100, 64) == (1 + 2) * tile + (2 + 3) * tile


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
