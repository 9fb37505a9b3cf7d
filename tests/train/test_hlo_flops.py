"""Trip-count-aware matmul FLOPs of optimized HLO (m3jax.train.hlo_flops), on XLA:CPU.

Known loops and matmul shapes with their FLOPs worked out by hand; convolutions with
padding and dilation (XLA:TPU writes dots that way) against XLA's own count; and a
scanned model against the same model unrolled.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from m3jax.model.config import MemoryConfig, ModelConfig
from m3jax.model.transformer import Transformer
from m3jax.train import hlo_flops


def _hlo(fn, *args) -> str:
  return jax.jit(fn).lower(*args).compile().as_text()


def test_scan_and_fori_loop_multiply_by_trip_count():
  x_8x16, w_16x16, v_16x24 = jnp.ones((8, 16)), jnp.ones((16, 16)), jnp.ones((16, 24))

  def f(x, w, v):
    def step(c, _):  # 7 iterations, each a [8,16] @ [16,16] and, 3 times, [8,16] @ [16,16]
      inner = jax.lax.fori_loop(0, 3, lambda i, a: jnp.sin(a @ w), c)
      return jnp.tanh(c @ w) + inner, None

    c, _ = jax.lax.scan(step, x, None, length=7)
    return c @ v  # once: [8,16] @ [16,24]

  text = _hlo(f, x_8x16, w_16x16, v_16x24)
  per_matmul = 2 * 8 * 16 * 16
  expected = 7 * (1 + 3) * per_matmul + 2 * 8 * 16 * 24
  result = hlo_flops.analyze(text)
  assert result.flops == expected
  assert sorted(loop["trip_count"] for loop in result.loops) == [3, 7]
  assert result.unknown_trip_counts == 0
  # Each body once is what cost_analysis reports: far fewer.
  once = hlo_flops.analyze(text, use_trip_counts=False).flops
  assert once == 2 * per_matmul + 2 * 8 * 16 * 24


def test_gradient_of_a_scan_counts_forward_and_backward_matmuls():
  def loss(w, x):
    c, _ = jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=5)
    return c.sum()

  text = _hlo(jax.grad(loss), jnp.ones((16, 16)), jnp.ones((8, 16)))
  # Per iteration: forward c @ w, backward dc @ w.T and c.T @ dc.
  assert hlo_flops.analyze(text).flops == 5 * 3 * 2 * 8 * 16 * 16


def test_batched_dot_contracting_dims():
  q_BxHxTxD, k_BxHxSxD = jnp.ones((2, 3, 5, 4)), jnp.ones((2, 3, 7, 4))
  text = _hlo(lambda q, k: jnp.einsum("bhtd,bhsd->bhts", q, k), q_BxHxTxD, k_BxHxSxD)
  assert hlo_flops.analyze(text).flops == 2 * (2 * 3 * 5 * 7) * 4


@pytest.mark.parametrize(
  "padding, lhs_dilation, stride",
  [((0, 0), (1,), (1,)), ((4, 4), (1,), (1,)), ((2, 1), (4,), (3,)), ((0, 0), (3,), (2,))],
)
def test_convolution_with_padding_and_dilation_matches_xla(padding, lhs_dilation, stride):
  """Padding and dilation holes hold no work: the count agrees with XLA's cost model."""
  lhs_NxCxW, rhs_OxIxW = jnp.ones((2, 6, 9)), jnp.ones((5, 6, 4))

  def conv(lhs, rhs):
    return jax.lax.conv_general_dilated(
      lhs, rhs, stride, [padding], lhs_dilation=lhs_dilation, rhs_dilation=(1,)
    )

  compiled = jax.jit(conv).lower(lhs_NxCxW, rhs_OxIxW).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  counted = hlo_flops.analyze(compiled.as_text()).flops
  assert counted > 0 and counted == pytest.approx(cost["flops"], rel=0.02)


def test_tpu_style_instructions_parse():
  """Layouts with tiles, tuple shapes and a while with XLA's known_trip_count."""
  text = """HloModule m, is_scheduled=true

%body (p: (s32[], bf16[4,3200])) -> (s32[], bf16[4,3200]) {
  %p = (s32[]{:T(128)}, bf16[4,3200]{1,0:T(4,128)(2,1)}) parameter(0)
  %x = bf16[4,3200]{1,0:T(4,128)(2,1)} get-tuple-element(%p), index=1
  %w = bf16[3200,400]{1,0:T(8,128)(2,1)} constant({...})
  %conv = bf16[4,400]{1,0:T(4,128)(2,1)} convolution(%x, %w), dim_labels=bf_io->bf
  %ag = bf16[3200,400]{1,0} all-gather-start(%w), channel_id=1, dimensions={0}
  %agd = bf16[3200,400]{1,0} all-gather-done(%ag)
  ROOT %t = (s32[]{:T(128)}, bf16[4,3200]{1,0:T(4,128)(2,1)}) tuple(%i, %x)
}

%cond (p: (s32[], bf16[4,3200])) -> pred[] {
  %p = (s32[]{:T(128)}, bf16[4,3200]{1,0:T(4,128)(2,1)}) parameter(0)
  %n = s32[]{:T(128)} constant(22)
  ROOT %lt = pred[]{:T(512)} compare(%i, %n), direction=LT
}

ENTRY %main (a: bf16[4,3200]) -> bf16[4,3200] {
  %a = bf16[4,3200]{1,0:T(4,128)(2,1)} parameter(0)
  %w1 = (s32[]{:T(128)}, bf16[4,3200]{1,0:T(4,128)(2,1)}) while(%t0), condition=%cond, \
body=%body, backend_config={"known_trip_count":{"n":"44"}}
  %w2 = (s32[]{:T(128)}, bf16[4,3200]{1,0:T(4,128)(2,1)}) while(%t0), condition=%cond, body=%body
  %ar = f32[] all-reduce(%s), to_apply=%add
  ROOT %r = bf16[4,3200]{1,0} get-tuple-element(%w2), index=1
}
""".replace("\\\n", "")
  result = hlo_flops.analyze(text)
  per_body = 2 * 4 * 400 * 3200
  assert [(loop["trip_count"], loop["source"]) for loop in result.loops] == [
    (44, "known_trip_count"),
    (22, "condition"),
  ]
  assert result.flops == (44 + 22) * per_body
  assert result.collectives["all-gather"] == 44 + 22
  assert result.collectives["all-reduce"] == 1


def test_pallas_kernels_count_their_cost_estimate_or_are_reported_opaque():
  """libtpu writes a kernel's cost_estimate with the count as a JSON string; a kernel with
  none adds no FLOPs and is reported instead (splash attention gives none)."""

  def kernel(name, estimate):
    config = '{"custom_call_config": {"body": "AAAA"' + estimate + "}}"
    return (
      f"  %{name} = bf16[8,128]{{1,0}} custom-call(%a), "
      f'custom_call_target="tpu_custom_call", backend_config={config}\n'
    )

  text = (
    "HloModule m\n\nENTRY %main (a: bf16[8,128]) -> bf16[8,128] {\n"
    + "  %a = bf16[8,128]{1,0} parameter(0)\n"
    + kernel("k1", ', "cost_estimate":{"flops":"8388608","transcendentals":"1"}')
    + kernel("k2", ', "cost_estimate":{"flops":1000,"transcendentals":1}')
    + kernel("k3", "")
    + "  ROOT %r = bf16[8,128]{1,0} add(%k1, %k2)\n}\n"
  )
  result = hlo_flops.analyze(text)
  assert result.flops == 8388608 + 1000
  assert result.opaque_kernels == 1 and result.kernels == 3
  assert result.kernel_flops == 8388608 + 1000


CFG = ModelConfig(
  vocab_size=97,
  num_layers=4,
  num_heads=4,
  num_kv_heads=2,
  head_dim=8,
  embed_dim=32,
  mlp_dim=64,
  memory=MemoryConfig(
    memory_layers=(0, 1), tokens_per_head=2, refs_per_chunk=1, chunk_len=8, ref_len=8
  ),
)


def _grad_hlo(cfg: ModelConfig) -> str:
  model = Transformer(cfg)
  tokens = jnp.zeros((2, 16), jnp.int32)
  params = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), tokens)["params"])

  def loss(p, t):
    return model.apply({"params": p}, t).astype(jnp.float32).mean()

  return _hlo(jax.grad(loss), params, tokens)


@pytest.mark.integration  # two CPU compiles of a model gradient (slow on a loaded machine)
def test_scanned_model_counts_as_the_unrolled_one():
  """Two scanned runs of 2 layers (memory layers, the rest) against 4 unrolled layers."""
  unrolled = hlo_flops.analyze(_grad_hlo(CFG))
  scanned_hlo = _grad_hlo(dataclasses.replace(CFG, scan_layers=True))
  scanned = hlo_flops.analyze(scanned_hlo)
  assert [loop["trip_count"] for loop in scanned.loops].count(2) >= 4  # fwd and bwd runs
  assert scanned.unknown_trip_counts == 0
  assert scanned.flops == pytest.approx(unrolled.flops, rel=0.03)
  # Counting each scanned body once (cost_analysis's way) misses layers.
  once = hlo_flops.analyze(scanned_hlo, use_trip_counts=False)
  assert once.flops < 0.8 * unrolled.flops
