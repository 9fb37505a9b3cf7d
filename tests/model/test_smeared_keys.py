"""Smeared keys (``model.smeared_keys``, ``model.smear_width``): the formula, causality,
and every path that computes keys (training forward, reference encoding, prefill, decode,
scanned layers) agreeing with each other, for one and for several earlier tokens.

Float32 throughout; the cached paths run the same ops in another association order
(cache buffers, padding), hence 1e-5 as in test_transformer.py.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m3jax.memory.encode import encode_references, to_memory_kv
from m3jax.model import layers, stack
from m3jax.model.transformer import Transformer
from tests.model.test_transformer import CFG as PLAIN

TOL = 1e-5
# test_transformer's model (memory layers 0-1 of 3, 2 references of 3 tokens per chunk of
# 4) with attention far from uniform, so that a wrong key shows.
CFG = dataclasses.replace(PLAIN, init_std=0.3, smeared_keys=True)


def _cfg(width=1):
  return dataclasses.replace(CFG, smear_width=width)


@functools.cache
def _params(cfg=CFG):
  tokens = jnp.zeros((1, 8), jnp.int32)
  params = nn.meta.unbox(Transformer(cfg).init(jax.random.key(0), tokens)["params"])
  # Distinct mixes per (layer, head, tap), far from the init's 1/2 and uniform taps, so a
  # swapped or shared coefficient shows.
  rng = np.random.default_rng(3)
  for i in range(cfg.num_layers):
    attn = params[f"layer_{i}"]["attn"]
    attn["smear"] = jnp.asarray(rng.uniform(-2.5, 2.5, cfg.num_kv_heads), jnp.float32)
    if cfg.smear_width > 1:
      taps = rng.uniform(-2.5, 2.5, (cfg.num_kv_heads, cfg.smear_width))
      attn["smear_taps"] = jnp.asarray(taps, jnp.float32)
  return params


def _memory(params, batch, chunks, seed=1):
  rng = np.random.default_rng(seed)
  refs = jnp.asarray(rng.integers(5, CFG.vocab_size, (4, CFG.memory.ref_len)), jnp.int32)
  enc = encode_references(params, CFG, refs, jnp.asarray([6, 3, 5, 6], jnp.int32))
  ids = rng.integers(0, 4, (batch, chunks, CFG.memory.refs_per_chunk))
  return to_memory_kv(enc, jnp.asarray(ids), jnp.asarray(rng.random(ids.shape) > 0.2))


def test_off_adds_no_parameter_and_no_cache_field():
  cfg = dataclasses.replace(CFG, smeared_keys=False)
  params = nn.meta.unbox(Transformer(cfg).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
  assert not {"smear", "smear_taps"} & set(params["params"]["layer_0"]["attn"])
  cache = Transformer(cfg).apply(params, 1, 4, method=Transformer.init_cache)
  assert cache.k_last_LxBxWxKxD is None


def test_width_one_has_no_taps():
  """W = 1 is Olsson et al.'s smear: one parameter per head, as before smear_width."""
  assert "smear_taps" not in _params()["layer_0"]["attn"]
  assert _params(_cfg(3))["layer_0"]["attn"]["smear_taps"].shape == (CFG.num_kv_heads, 3)


@pytest.mark.parametrize("width", [1, 3])
def test_block_keys_are_the_formula_written_out(width):
  """Block.qkv's keys against the projection and the mix written per position by hand:
  k'_t = s·k_t + (1 - s)·Σ_j π_j·k_{t-j}, s = sigmoid(a_head), π = softmax(taps_head)
  (1 for W = 1), and k_0 standing in for the keys before position 0."""
  cfg = _cfg(width)
  p = _params(cfg)["layer_1"]
  x = jax.random.normal(jax.random.key(4), (2, 5, CFG.embed_dim))
  _, k, _ = layers.Block(cfg).apply({"params": p}, x, method=layers.Block.qkv)
  h = np.asarray(x, np.float64)
  h = (
    h
    / np.sqrt((h * h).mean(-1, keepdims=True) + CFG.norm_eps)
    * np.asarray(p["attn_norm"]["scale"])
  )
  raw = np.einsum("bte,ekd->btkd", h, np.asarray(p["attn"]["k"], np.float64))
  s = 1 / (1 + np.exp(-np.asarray(p["attn"]["smear"], np.float64)))
  pi = np.ones((CFG.num_kv_heads, 1))
  if width > 1:
    e = np.exp(np.asarray(p["attn"]["smear_taps"], np.float64))
    pi = e / e.sum(-1, keepdims=True)
  want = np.zeros_like(raw)
  for t in range(raw.shape[1]):
    for head in range(CFG.num_kv_heads):
      prev = sum(pi[head, j - 1] * raw[:, max(t - j, 0), head] for j in range(1, width + 1))
      want[:, t, head] = s[head] * raw[:, t, head] + (1 - s[head]) * prev
  np.testing.assert_allclose(np.asarray(k), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("width", [1, 2])
def test_a_token_changes_no_earlier_logit(width):
  cfg = _cfg(width)
  params = _params(cfg)
  t = jax.random.randint(jax.random.key(5), (1, 10), 5, CFG.vocab_size)
  mem = _memory(params, 1, 3)
  base = Transformer(cfg).apply({"params": params}, t, mem)
  changed = Transformer(cfg).apply({"params": params}, t.at[0, 6].set(7), mem)
  np.testing.assert_array_equal(np.asarray(base[0, :6]), np.asarray(changed[0, :6]))
  assert np.abs(np.asarray(base[0, 7]) - np.asarray(changed[0, 7])).max() > 1e-3


@pytest.mark.parametrize("width,prompt", [(1, 5), (3, 5), (3, 1)])
def test_prefill_then_decode_equals_the_full_forward(width, prompt):
  """Decoding carries each layer's last W raw keys in the cache; the first decoded token
  must mix in the prompt's last keys, and so on across chunk boundaries. A prompt shorter
  than W leaves stand-ins for the keys before it in the cache, as training has."""
  cfg = _cfg(width)
  params = _params(cfg)
  b, t = 2, 11
  tokens = jax.random.randint(jax.random.key(6), (b, t), 5, CFG.vocab_size)
  mem = _memory(params, b, -(-t // CFG.memory.chunk_len))
  model = Transformer(cfg)
  full = model.apply({"params": params}, tokens, mem)
  cache = model.apply({"params": params}, b, 12, method=Transformer.init_cache)
  pre = -(-prompt // CFG.memory.chunk_len)
  pre_mem = type(mem)(
    mem.keys_LxBxCxRxKxMxD[:, :, :pre],
    mem.values_LxBxCxRxKxMxD[:, :, :pre],
    mem.mask_BxCxRxM[:, :pre],
  )
  logits, cache = model.apply(
    {"params": params}, tokens[:, :prompt], cache, pre_mem, method=Transformer.step
  )
  outs = [logits]
  for i in range(prompt, t):
    chunk = mem.chunk(i // CFG.memory.chunk_len)
    logits, cache = model.apply(
      {"params": params}, tokens[:, i : i + 1], cache, chunk, method=Transformer.step
    )
    outs.append(logits)
  np.testing.assert_allclose(
    np.asarray(jnp.concatenate(outs, 1)), np.asarray(full), rtol=TOL, atol=TOL
  )


@pytest.mark.parametrize("width,short", [(1, 3), (3, 2)])
def test_ragged_prefill_keeps_each_rows_own_last_keys(width, short):
  cfg = _cfg(width)
  params = _params(cfg)
  tokens = jax.random.randint(jax.random.key(7), (2, 9), 5, CFG.vocab_size)
  lengths = jnp.array([6, short])
  model = Transformer(cfg)
  cache = model.apply({"params": params}, 2, 12, method=Transformer.init_cache)
  padded = jnp.where(jnp.arange(6)[None] < lengths[:, None], tokens[:, :6], 0)
  _, cache = model.apply(
    {"params": params}, padded, cache, lengths_B=lengths, method=Transformer.step
  )
  nxt = jnp.stack([tokens[0, 6], tokens[1, short]])[:, None]
  logits, _ = model.apply({"params": params}, nxt, cache, method=Transformer.step)
  for row, n in ((0, 7), (1, short + 1)):
    full = model.apply({"params": params}, tokens[row : row + 1, :n])
    np.testing.assert_allclose(
      np.asarray(logits[row, 0]), np.asarray(full[0, n - 1]), rtol=TOL, atol=TOL
    )


@pytest.mark.parametrize("width", [1, 2])
def test_scanned_layers_equal_unrolled_with_smeared_keys(width):
  cfg = _cfg(width)
  params = _params(cfg)
  scan_cfg = dataclasses.replace(cfg, scan_layers=True)
  scanned = stack.scan_params(params, scan_cfg)
  t = jax.random.randint(jax.random.key(8), (2, 8), 5, CFG.vocab_size)
  mem = _memory(params, 2, 2)
  a = Transformer(cfg).apply({"params": params}, t, mem)
  b = Transformer(scan_cfg).apply({"params": scanned}, t, mem)
  np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=TOL, atol=TOL)


def test_the_mix_is_learned():
  cfg = _cfg(2)
  params = _params(cfg)
  t = jax.random.randint(jax.random.key(9), (2, 8), 5, CFG.vocab_size)

  def loss(p):
    return jnp.mean(Transformer(cfg).apply({"params": p}, t) ** 2)

  g = jax.grad(loss)(params)
  for name in ("smear", "smear_taps"):
    assert all(np.abs(np.asarray(g[f"layer_{i}"]["attn"][name])).min() > 0 for i in range(3))


@pytest.mark.parametrize("smeared,width", [(False, 1), (True, 1), (True, 3)])
def test_parameter_count_closed_form(smeared, width):
  cfg = dataclasses.replace(CFG, smeared_keys=smeared, smear_width=width)
  params = nn.meta.unbox(Transformer(cfg).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
  n = sum(x.size for x in jax.tree_util.tree_leaves(params["params"]))
  embed = cfg.vocab_size * cfg.embed_dim * (1 if cfg.tie_embeddings else 2)
  assert n - embed == cfg.non_embedding_params()


@pytest.mark.parametrize("smeared", [False, True])
def test_cache_shardings_match_the_cache_a_model_makes(smeared):
  """The decode step's out_shardings (and the AOT compile's) must have the cache's tree."""
  from m3jax import sharding

  cfg = dataclasses.replace(CFG, smeared_keys=smeared, smear_width=2)
  mesh = sharding.make_mesh((-1, 1, 1))
  specs = sharding.cache_shardings(
    mesh, sharding.normalize_rules(sharding.DEFAULT_RULES), smeared_keys=smeared
  )
  params = nn.meta.unbox(Transformer(cfg).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
  cache = Transformer(cfg).apply(
    params, 8, 8, method=Transformer.init_cache
  )  # 8 rows: any host device count up to 8
  assert jax.tree_util.tree_structure(specs) == jax.tree_util.tree_structure(cache)
  placed = jax.device_put(cache, specs)
  assert (placed.k_last_LxBxWxKxD is not None) is smeared
