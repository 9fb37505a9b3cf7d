"""m3jax's own Pallas kernel (m3jax.model.flash_kernel): its tiles, its tile lists, and
what a remat policy keeps of it. (Its forward and gradients against the dense reference
are in test_fused_attention.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jex_core

from m3jax.model import flash_kernel as fk
from m3jax.model import splash_attention as splash
from m3jax.model import stack

LAYOUTS = [  # (t, s_ctx, offset, chunks, per_chunk, chunk_len): splash.computed_pairs' args
  (256, 257, 1, 0, 0, 64),
  (129, 129, 0, 0, 0, 64),
  (128, 129, 1, 2, 40, 64),
  (128, 256, 1, 1, 200, 64),
  (256, 257, 1, 4, 100, 64),
  (2048, 2049, 1, 32, 40, 64),  # the paper's stage-2 memory layer
  (300, 301, 1, 5, 24, 64),
]


def _layout(t, s_ctx, offset, chunks, per_chunk, chunk_len):
  tp, sp = splash.padded_shape(t, s_ctx - 1 + chunks * per_chunk)
  return fk.Layout(t, tp, sp, s_ctx - 1, offset, chunks, per_chunk, chunk_len)


@pytest.mark.parametrize("args", LAYOUTS)
def test_tiles_are_the_ones_the_flop_count_assumes(args):
  """The FLOP accounting (m3jax.train.flops.attention_kernels) counts either kernel by
  splash.computed_pairs; the flash kernel visits exactly those tiles."""
  layout = _layout(*args)
  assert int(layout.tiles().sum()) * fk.BLOCK**2 == splash.computed_pairs(*args)


@pytest.mark.parametrize("args", LAYOUTS[:5])
def test_elementwise_mask_is_splash_static_mask_for_real_queries(args):
  """Both kernels read the same keys: the flash layout's mask equals the splash static
  mask (built independently, numpy) on every real query."""
  t = args[0]
  layout = _layout(*args)
  mask = layout.allowed(np.arange(layout.tp)[:, None], np.arange(layout.sp)[None, :])
  np.testing.assert_array_equal(mask[:t], splash.static_mask(*args)[:t])
  assert not mask[t:].any()  # padded queries read the sink alone


def test_tile_lists_pad_each_row_with_its_last_tile():
  tiles = np.array([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 1]], bool)
  index, count = fk.tile_lists(tiles)
  np.testing.assert_array_equal(count, [2, 0, 3])
  np.testing.assert_array_equal(index, [[0, 2, 2], [0, 0, 0], [1, 2, 3]])


def test_float_floordiv_is_exact_over_positions():
  x = np.arange(-300, 70_000, dtype=np.int32)
  for n in (1, 3, 40, 64, 200, 1280):
    got = np.asarray(fk._floordiv(jnp.asarray(x), n))
    np.testing.assert_array_equal(got, x // n, err_msg=f"n={n}")


def test_bfloat16_forward_is_the_float32_softmax_to_bf16_rounding():
  """bf16 q, k, v (GQA, 2 query heads per KV head) against a float32 softmax of the same
  bf16 inputs, built here: the kernel rounds p to bf16 before p·v (unit roundoff 2^-9)
  and its output to bf16, so the output is within a few 2^-9 of max |v|."""
  b, h, kv, d, t, chunks, per_chunk = 1, 4, 2, 16, 100, 2, 24
  layout = _layout(t, t + 1, 1, chunks, per_chunk, 64)
  ks = jax.random.split(jax.random.key(3), 4)
  q = (jax.random.normal(ks[0], (b, h, layout.tp, d)) * 0.5).astype(jnp.bfloat16)
  k = jax.random.normal(ks[1], (b, kv, layout.sp, d)).astype(jnp.bfloat16)
  v = jax.random.normal(ks[2], (b, kv, layout.sp, d)).astype(jnp.bfloat16)
  valid = jax.random.bernoulli(ks[3], 0.8, (b, 1, layout.sp)).astype(jnp.int32)
  out = fk.flash_attention(layout, True, q, k, v, valid)
  assert out.dtype == jnp.bfloat16

  mask = layout.allowed(np.arange(layout.tp)[:, None], np.arange(layout.sp)[None, :])
  mask = mask[None, None] & (np.asarray(valid)[:, :, None, :] > 0)
  f32 = lambda x: np.asarray(x, np.float32)
  kk, vv = np.repeat(f32(k), h // kv, axis=1), np.repeat(f32(v), h // kv, axis=1)
  logits = np.where(mask, np.einsum("bhtd,bhsd->bhts", f32(q), kk), -np.inf)
  peak = np.maximum(logits.max(-1, keepdims=True), 0.0)  # the sink's logit is 0
  p = np.exp(logits - peak)
  ref = np.einsum("bhts,bhsd->bhtd", p, vv) / (p.sum(-1, keepdims=True) + np.exp(-peak))
  err = np.abs(f32(out)[:, :, :t] - ref[:, :, :t]).max() / np.abs(f32(v)).max()
  assert err < 4 * 2.0**-9, err
  assert not np.asarray(out[:, :, t:], np.float32).any()


def _live_kernels(jaxpr, name: str) -> int:
  """pallas_calls called ``name`` whose outputs something uses (dead ones are dropped
  before the program runs), counted through every nested jaxpr."""
  live = 0
  used = {v for e in jaxpr.eqns for v in e.invars if isinstance(v, jex_core.Var)}
  used |= {v for v in jaxpr.outvars if isinstance(v, jex_core.Var)}
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "pallas_call" and name in str(eqn.params.get("name", "")):
      live += any(v in used for v in eqn.outvars)
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else [param]:
        if isinstance(sub, jex_core.ClosedJaxpr):
          live += _live_kernels(sub.jaxpr, name)
        elif isinstance(sub, jex_core.Jaxpr):
          live += _live_kernels(sub, name)
  return live


@pytest.mark.parametrize(
  "policy,forwards", [("dots_attention_out", 1), ("dots_except_attention", 2), ("full", 2)]
)
def test_dots_attention_out_keeps_the_kernel_output_so_the_backward_reruns_no_forward(
  policy, forwards
):
  layout = _layout(100, 101, 1, 0, 0, 64)
  q = jnp.ones((1, 2, layout.tp, 16))
  k = v = jnp.ones((1, 1, layout.sp, 16))
  valid = jnp.ones((1, 1, layout.sp), jnp.int32)
  w = jnp.eye(16)

  def layer(q, k, v):  # a projection (a dot the policies save), the kernel, a nonlinearity
    return jnp.tanh(fk.flash_attention(layout, True, jnp.sin(q @ w), k, v, valid))

  _, checkpoint_policy = stack.remat_policy(policy)
  f = jax.checkpoint(layer, policy=checkpoint_policy)
  grad = jax.grad(lambda q, k, v: f(q, k, v).sum(), argnums=(0, 1, 2))
  jaxpr = jax.make_jaxpr(grad)(q, k, v).jaxpr
  assert _live_kernels(jaxpr, "m3jax_flash_fwd") == forwards
  assert _live_kernels(jaxpr, "m3jax_flash_bwd") == 1
