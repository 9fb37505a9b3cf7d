"""Scanned layers equal the unrolled reference; remat policies; layout conversion.

Float32 throughout: scanned and unrolled run the same ops in the same order (only the
loop differs), and rematerialization recomputes the same ops, so they agree to float32
rounding. Tolerance: 1e-5 relative to the largest magnitude of each compared array.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m3jax.memory.encode import encode_references, to_memory_kv
from m3jax.model import stack
from m3jax.model.config import MemoryConfig, ModelConfig
from m3jax.model.transformer import Transformer

TOL = 1e-5
# Memory layers 1, 2 of 4: three runs (plain, memory, plain), the middle one scanned
# over 2 layers; init_std is large so that attention is far from uniform.
CFG = ModelConfig(
  vocab_size=97,
  num_layers=4,
  num_heads=4,
  num_kv_heads=2,
  head_dim=8,
  embed_dim=32,
  mlp_dim=64,
  init_std=0.3,
  memory=MemoryConfig(
    memory_layers=(1, 2), tokens_per_head=3, refs_per_chunk=2, chunk_len=4, ref_len=6
  ),
)
SCAN = dataclasses.replace(CFG, scan_layers=True)


def _close(a, b, what):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    scale = max(float(np.abs(y).max()), 1e-30)
    err = float(np.abs(x - y).max()) / scale
    assert err < TOL, f"{what}: relative error {err:.2e}"


@functools.cache
def _params():
  tokens = jnp.zeros((1, 8), jnp.int32)
  params = nn.meta.unbox(Transformer(CFG).init(jax.random.key(0), tokens)["params"])
  return params, stack.scan_params(params, SCAN)


def _tokens(shape, seed=2):
  return jax.random.randint(jax.random.key(seed), shape, 5, CFG.vocab_size)


def test_layer_runs_split_memory_from_plain_layers():
  assert stack.layer_runs(CFG) == ((0, 1, False), (1, 3, True), (3, 4, False))
  paper = dataclasses.replace(
    CFG, num_layers=44, memory=dataclasses.replace(CFG.memory, memory_layers=tuple(range(22)))
  )
  assert stack.layer_runs(paper) == ((0, 22, True), (22, 44, False))
  gaps = dataclasses.replace(CFG, memory=dataclasses.replace(CFG.memory, memory_layers=(0, 2)))
  assert stack.layer_runs(gaps) == ((0, 1, True), (1, 2, False), (2, 3, True), (3, 4, False))


@pytest.mark.integration
def test_conversion_round_trips_and_matches_scanned_init():
  params, scanned = _params()
  init = nn.meta.unbox(
    Transformer(SCAN).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
  )
  assert jax.tree_util.tree_structure(scanned) == jax.tree_util.tree_structure(init)
  assert jax.tree_util.tree_map(jnp.shape, scanned) == jax.tree_util.tree_map(jnp.shape, init)
  assert scanned["layers_1_to_2"]["mlp"]["up"].shape == (2, CFG.embed_dim, CFG.mlp_dim)
  back = stack.unscan_params(scanned, SCAN)
  jax.tree_util.tree_map(np.testing.assert_array_equal, back, params)
  assert stack.to_layout(params, SCAN) is not params
  assert stack.to_layout(scanned, SCAN) is scanned
  jax.tree_util.tree_map(np.testing.assert_array_equal, stack.to_layout(scanned, CFG), params)
  with pytest.raises(ValueError, match="unrolled"):
    stack.scan_params(scanned, SCAN)


def test_scanned_params_carry_the_layers_axis():
  boxed = jax.eval_shape(
    lambda: Transformer(SCAN).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  )
  spec = nn.get_partition_spec(boxed)["params"]["layers_1_to_2"]["attn"]["q"]
  assert tuple(spec) == ("layers", "embed", "heads", "head_dim")


def _memory(params, cfg, batch, chunks):
  rng = np.random.default_rng(1)
  refs = jnp.asarray(rng.integers(5, cfg.vocab_size, (4, cfg.memory.ref_len)), jnp.int32)
  lengths = jnp.asarray([6, 2, 5, 1], jnp.int32)
  ids = jnp.asarray(rng.integers(0, 4, (batch, chunks, cfg.memory.refs_per_chunk)))
  present = jnp.asarray(rng.random(ids.shape) > 0.3)
  return to_memory_kv(encode_references(params, cfg, refs, lengths), ids, present)


def _loss(cfg, tokens, use_memory):
  """A scalar of the logits whose gradient reaches every parameter (and, in stage 2,
  flows through the live-encoded memories: encode_grad)."""
  w = jax.random.normal(jax.random.key(9), tokens.shape + (cfg.vocab_size,))

  def loss(params):
    memory = _memory(params, cfg, tokens.shape[0], 3) if use_memory else None
    return jnp.sum(Transformer(cfg).apply({"params": params}, tokens, memory) * w)

  return loss


@pytest.mark.integration
@pytest.mark.parametrize("use_memory", [False, True], ids=["stage1", "stage2"])
def test_scanned_forward_and_gradients_equal_unrolled(use_memory):
  params, scanned = _params()
  tokens = _tokens((2, 10))
  mem_u = _memory(params, CFG, 2, 3) if use_memory else None
  mem_s = _memory(scanned, SCAN, 2, 3) if use_memory else None
  ref = Transformer(CFG).apply({"params": params}, tokens, mem_u)
  _close(Transformer(SCAN).apply({"params": scanned}, tokens, mem_s), ref, "logits")
  g_ref = jax.jit(jax.grad(_loss(CFG, tokens, use_memory)))(params)
  g_scan = jax.jit(jax.grad(_loss(SCAN, tokens, use_memory)))(scanned)
  _close(g_scan, stack.scan_params(g_ref, SCAN), "gradients")


@pytest.mark.integration
def test_scanned_encoding_and_sink_equal_unrolled():
  params, scanned = _params()
  refs = _tokens((3, 6), seed=5)
  enc_u = Transformer(CFG).apply({"params": params}, refs, method=Transformer.encode)
  enc_s = Transformer(SCAN).apply({"params": scanned}, refs, method=Transformer.encode)
  assert enc_s.k_LxBxNxKxD.shape[0] == 2
  _close(enc_s, enc_u, "encoded layers")
  _close(
    Transformer(SCAN).apply({"params": scanned}, method=Transformer.sink_kv),
    Transformer(CFG).apply({"params": params}, method=Transformer.sink_kv),
    "sink",
  )


def _decode(cfg, params, tokens, memory):
  """Prefill 4 tokens with chunk 0's memories, then decode with resident memories."""
  model = Transformer(cfg)
  apply = lambda *a, **k: model.apply({"params": params}, *a, **k)
  cache = apply(tokens.shape[0], 12, method=Transformer.init_cache)
  out, cache = apply(tokens[:, :4], cache, memory.chunk(0), method=Transformer.step)
  outs = [out]
  cache = apply(cache, memory.chunk(1), method=Transformer.load_memory)
  for i in range(4, tokens.shape[1]):
    out, cache = apply(tokens[:, i : i + 1], cache, method=Transformer.step)
    outs.append(out)
  return jnp.concatenate(outs, 1), cache


@pytest.mark.integration
def test_scanned_decoding_equals_unrolled():
  params, scanned = _params()
  tokens = _tokens((2, 7), seed=6)
  (lu, cu), (ls, cs) = (
    _decode(CFG, params, tokens, _memory(params, CFG, 2, 2)),
    _decode(SCAN, scanned, tokens, _memory(scanned, SCAN, 2, 2)),
  )
  _close(ls, lu, "decode logits")
  _close(cs.k_LxBxSxKxD, cu.k_LxBxSxKxD, "cache keys")
  # and decoding agrees with the full forward of the same layout
  full = Transformer(SCAN).apply(
    {"params": scanned}, tokens[:, :4], _memory(scanned, SCAN, 2, 2).chunk(0)
  )
  _close(ls[:, :4], full, "prefill vs forward")


@functools.cache
def _stage2_grads(scan_layers: bool, policy: str, impl: str = "dense"):
  params, scanned = _params()
  cfg = dataclasses.replace(SCAN if scan_layers else CFG, remat_policy=policy, attention_impl=impl)
  return jax.jit(jax.grad(_loss(cfg, _tokens((2, 10)), True)))(scanned if scan_layers else params)


@pytest.mark.integration
@pytest.mark.parametrize("policy", ["full", "dots", "dots_except_attention", "dots_attention_out"])
@pytest.mark.parametrize("scan_layers", [False, True], ids=["unrolled", "scanned"])
def test_every_remat_policy_gives_the_same_gradients(policy, scan_layers):
  _close(
    _stage2_grads(scan_layers, policy),
    _stage2_grads(scan_layers, "none"),
    f"{policy} (scan_layers={scan_layers})",
  )


@pytest.mark.integration
def test_scanned_stage2_on_the_flash_kernel_keeping_its_outputs_equals_dense():
  """The whole stage-2 gradient (memory layers, live encoding) with m3jax's own kernel
  in interpret mode, scanned, under dots_attention_out (the kernel's outputs kept, its
  forward not rerun), equals the dense reference without remat."""
  _close(
    _stage2_grads(True, "dots_attention_out", "flash_interpret"),
    _stage2_grads(True, "none"),
    "flash, scanned, dots_attention_out",
  )


def _residual_bytes(cfg, params, tokens):
  """Bytes the forward keeps for the backward pass (the leaves of the vjp closure)."""
  f = lambda p: Transformer(cfg).apply({"params": p}, tokens)
  _, vjp = jax.vjp(f, params)
  param_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(params))
  return sum(x.nbytes for x in jax.tree_util.tree_leaves(vjp)) - param_bytes


@pytest.mark.integration
def test_remat_policies_keep_less_in_the_documented_order():
  _, scanned = _params()
  tokens = _tokens((2, 32))
  kept = {
    pol: _residual_bytes(dataclasses.replace(SCAN, remat_policy=pol), scanned, tokens)
    for pol in ("none", "dots", "dots_except_attention", "full")
  }
  assert kept["full"] < kept["dots_except_attention"] < kept["dots"] <= kept["none"], kept
