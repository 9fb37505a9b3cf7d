"""Smeared keys (``model.smeared_keys``): the formula, causality, and every path that
computes keys (training forward, reference encoding, prefill, decode, scanned layers)
agreeing with each other.

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


@functools.cache
def _params(cfg=CFG):
  tokens = jnp.zeros((1, 8), jnp.int32)
  params = nn.meta.unbox(Transformer(cfg).init(jax.random.key(0), tokens)["params"])
  # Distinct mixes per (layer, head), far from the init's 1/2, so a swapped or shared
  # coefficient shows.
  rng = np.random.default_rng(3)
  for i in range(cfg.num_layers):
    smear = rng.uniform(-2.5, 2.5, cfg.num_kv_heads).astype(np.float32)
    params[f"layer_{i}"]["attn"]["smear"] = jnp.asarray(smear)
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
  assert "smear" not in params["params"]["layer_0"]["attn"]
  cache = Transformer(cfg).apply(params, 1, 4, method=Transformer.init_cache)
  assert cache.k_last_LxBxKxD is None


def test_block_keys_are_the_papers_formula_written_out():
  """Block.qkv's keys against the projection and the mix written per position by hand:
  k'_t = s·k_t + (1 - s)·k_{t-1}, s = sigmoid(a_head), k'_0 = k_0."""
  p = _params()["layer_1"]
  x = jax.random.normal(jax.random.key(4), (2, 5, CFG.embed_dim))
  _, k, _ = layers.Block(CFG).apply({"params": p}, x, method=layers.Block.qkv)
  h = np.asarray(x, np.float64)
  h = (
    h
    / np.sqrt((h * h).mean(-1, keepdims=True) + CFG.norm_eps)
    * np.asarray(p["attn_norm"]["scale"])
  )
  raw = np.einsum("bte,ekd->btkd", h, np.asarray(p["attn"]["k"], np.float64))
  s = 1 / (1 + np.exp(-np.asarray(p["attn"]["smear"], np.float64)))
  want = raw.copy()
  for t in range(1, raw.shape[1]):
    for head in range(CFG.num_kv_heads):
      want[:, t, head] = s[head] * raw[:, t, head] + (1 - s[head]) * raw[:, t - 1, head]
  np.testing.assert_allclose(np.asarray(k), want, rtol=1e-5, atol=1e-5)


def test_a_token_changes_no_earlier_logit():
  params = _params()
  t = jax.random.randint(jax.random.key(5), (1, 10), 5, CFG.vocab_size)
  mem = _memory(params, 1, 3)
  base = Transformer(CFG).apply({"params": params}, t, mem)
  changed = Transformer(CFG).apply({"params": params}, t.at[0, 6].set(7), mem)
  np.testing.assert_array_equal(np.asarray(base[0, :6]), np.asarray(changed[0, :6]))
  assert np.abs(np.asarray(base[0, 7]) - np.asarray(changed[0, 7])).max() > 1e-3


def test_prefill_then_decode_equals_the_full_forward():
  """Decoding carries each layer's last raw key in the cache; the first decoded token
  must mix in the prompt's last key, and so on across chunk boundaries."""
  params = _params()
  b, t, prompt = 2, 11, 5
  tokens = jax.random.randint(jax.random.key(6), (b, t), 5, CFG.vocab_size)
  mem = _memory(params, b, -(-t // CFG.memory.chunk_len))
  model = Transformer(CFG)
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


def test_ragged_prefill_keeps_each_rows_own_last_key():
  params = _params()
  tokens = jax.random.randint(jax.random.key(7), (2, 9), 5, CFG.vocab_size)
  lengths = jnp.array([6, 3])
  model = Transformer(CFG)
  cache = model.apply({"params": params}, 2, 12, method=Transformer.init_cache)
  padded = jnp.where(jnp.arange(6)[None] < lengths[:, None], tokens[:, :6], 0)
  _, cache = model.apply(
    {"params": params}, padded, cache, lengths_B=lengths, method=Transformer.step
  )
  nxt = jnp.stack([tokens[0, 6], tokens[1, 3]])[:, None]
  logits, _ = model.apply({"params": params}, nxt, cache, method=Transformer.step)
  for row, n in ((0, 7), (1, 4)):
    full = model.apply({"params": params}, tokens[row : row + 1, :n])
    np.testing.assert_allclose(
      np.asarray(logits[row, 0]), np.asarray(full[0, n - 1]), rtol=TOL, atol=TOL
    )


def test_scanned_layers_equal_unrolled_with_smeared_keys():
  params = _params()
  scan_cfg = dataclasses.replace(CFG, scan_layers=True)
  scanned = stack.scan_params(params, scan_cfg)
  t = jax.random.randint(jax.random.key(8), (2, 8), 5, CFG.vocab_size)
  mem = _memory(params, 2, 2)
  a = Transformer(CFG).apply({"params": params}, t, mem)
  b = Transformer(scan_cfg).apply({"params": scanned}, t, mem)
  np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=TOL, atol=TOL)


def test_the_mix_is_learned():
  params = _params()
  t = jax.random.randint(jax.random.key(9), (2, 8), 5, CFG.vocab_size)

  def loss(p):
    return jnp.mean(Transformer(CFG).apply({"params": p}, t) ** 2)

  g = jax.grad(loss)(params)
  assert all(np.abs(np.asarray(g[f"layer_{i}"]["attn"]["smear"])).min() > 0 for i in range(3))


@pytest.mark.parametrize("smeared", [False, True])
def test_parameter_count_closed_form(smeared):
  cfg = dataclasses.replace(CFG, smeared_keys=smeared)
  params = nn.meta.unbox(Transformer(cfg).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
  n = sum(x.size for x in jax.tree_util.tree_leaves(params["params"]))
  embed = cfg.vocab_size * cfg.embed_dim * (1 if cfg.tie_embeddings else 2)
  assert n - embed == cfg.non_embedding_params()


@pytest.mark.parametrize("smeared", [False, True])
def test_cache_shardings_match_the_cache_a_model_makes(smeared):
  """The decode step's out_shardings (and the AOT compile's) must have the cache's tree."""
  from m3jax import sharding

  cfg = dataclasses.replace(CFG, smeared_keys=smeared)
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
  assert (placed.k_last_LxBxKxD is not None) is smeared
