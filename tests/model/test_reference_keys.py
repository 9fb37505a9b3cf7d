"""Reference keys (``model.memory.reference_keys``): each memory key of a reference also
carries a gated, attention-pooled key of the whole reference.

The pooled key is checked against a float64 NumPy loop over each reference's valid tokens,
written from the formula, not from the function under test. Float32 model, keys of order
1 (init_std 0.3), hence 1e-5 as in test_transformer.py.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from m3jax.memory.encode import encode_references
from m3jax.model import stack
from m3jax.model.config import MemoryConfig
from m3jax.model.transformer import Transformer
from m3jax.train.memory_batch import memory_from_batch
from tests.model.test_transformer import CFG as PLAIN

TOL = 1e-5
MEM = dataclasses.replace(PLAIN.memory, reference_keys=True)
CFG = dataclasses.replace(PLAIN, init_std=0.3, memory=MEM)
LENGTHS = jnp.asarray([6, 3, 5, 1], jnp.int32)


@functools.cache
def _params(cfg=CFG, trained=True):
  params = nn.meta.unbox(Transformer(cfg).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))
  params = params["params"]
  if trained and cfg.memory.reference_keys:  # far from the init's uniform pool and gate 0
    rng = np.random.default_rng(7)
    params = dict(params)
    params["ref_pool"] = jnp.asarray(rng.normal(0, 3, params["ref_pool"].shape), jnp.float32)
    params["ref_gate"] = jnp.asarray(rng.uniform(0.5, 2, params["ref_gate"].shape), jnp.float32)
  return params


def _refs(seed=1):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.integers(5, CFG.vocab_size, (4, CFG.memory.ref_len)), jnp.int32)


def _plain_params(params):
  return {k: v for k, v in params.items() if k not in ("ref_pool", "ref_gate")}


def test_off_adds_no_parameter_and_the_count_says_so():
  off = _params(PLAIN, trained=False)
  on = _params(CFG, trained=False)
  assert not {"ref_pool", "ref_gate"} & set(off)
  assert on["ref_pool"].shape == (2, CFG.num_kv_heads, CFG.head_dim)
  assert on["ref_gate"].shape == (2, CFG.num_kv_heads)
  count = lambda p: sum(x.size for x in jax.tree_util.tree_leaves(p))
  added = count(on) - count(off)
  assert added == CFG.non_embedding_params() - PLAIN.non_embedding_params() > 0


def test_init_gives_the_papers_keys():
  """The gate starts at 0: the same weights encode exactly the memories of the option off."""
  params = _params(CFG, trained=False)
  on = encode_references(params, CFG, _refs(), LENGTHS)
  off = encode_references(_plain_params(params), PLAIN, _refs(), LENGTHS)
  np.testing.assert_array_equal(on.keys_BxLxKxMxD, off.keys_BxLxKxMxD)
  np.testing.assert_array_equal(on.values_BxLxKxMxD, off.values_BxLxKxMxD)


def test_keys_are_the_pooled_formula_written_out():
  """key'_m = key_m + g·Σ_t a_t·k_t, a = softmax_t(k_t·w/√D) over the valid tokens only;
  values, masks and the selected tokens are the option-off ones."""
  params = _params()
  on = encode_references(params, CFG, _refs(), LENGTHS)
  off = encode_references(_plain_params(params), PLAIN, _refs(), LENGTHS)
  np.testing.assert_array_equal(on.token_idx_BxLxKxM, off.token_idx_BxLxKxM)
  np.testing.assert_array_equal(on.values_BxLxKxMxD, off.values_BxLxKxMxD)
  np.testing.assert_array_equal(on.mask_BxM, off.mask_BxM)
  enc = Transformer(CFG).apply({"params": params}, _refs(), method=Transformer.encode)
  k_raw = np.asarray(enc.k_raw_LxBxNxKxD, np.float64)
  w = np.asarray(params["ref_pool"], np.float64)
  g = np.asarray(params["ref_gate"], np.float64)
  want = np.asarray(off.keys_BxLxKxMxD, np.float64).copy()
  for b, n in enumerate(np.asarray(LENGTHS)):
    for layer in range(2):
      for head in range(CFG.num_kv_heads):
        ks = k_raw[layer, b, :n, head]  # the valid tokens only
        logits = ks @ w[layer, head] / np.sqrt(CFG.head_dim)
        a = np.exp(logits - logits.max())
        a /= a.sum()
        want[b, layer, head] += g[layer, head] * (a @ ks)
  np.testing.assert_allclose(on.keys_BxLxKxMxD, want, atol=TOL, rtol=TOL)
  assert np.abs(want - np.asarray(off.keys_BxLxKxMxD)).max() > 0.1  # the term is not small


def test_padding_does_not_reach_the_pooled_key():
  params = _params()
  refs = _refs()
  other = refs.at[1, 3:].set(7)  # reference 1 has 3 valid tokens
  a = encode_references(params, CFG, refs, LENGTHS)
  b = encode_references(params, CFG, other, LENGTHS)
  np.testing.assert_array_equal(a.keys_BxLxKxMxD[1], b.keys_BxLxKxMxD[1])


def test_training_reaches_the_pool_and_the_gate():
  """Stage 2's loss (live-encoded memories, encode_grad) has a gradient for both."""
  params = _params()
  rng = np.random.default_rng(2)
  tokens = jnp.asarray(rng.integers(5, CFG.vocab_size, (2, 8)), jnp.int32)
  refs = jnp.asarray(rng.integers(5, CFG.vocab_size, (2, 2, CFG.memory.ref_len)), jnp.int32)
  lengths = jnp.asarray([[6, 4], [5, 6]], jnp.int32)

  def loss(p):
    memory = memory_from_batch(p, CFG, refs, lengths)
    logits = Transformer(CFG).apply({"params": p}, tokens, memory)
    return jnp.mean(
      jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, tokens[..., None], -1)[..., 0]
    )

  grads = jax.grad(loss)(params)
  assert np.abs(grads["ref_pool"]).max() > 0
  assert np.abs(grads["ref_gate"]).max() > 0


def test_scanned_layers_encode_the_same_memories():
  cfg = dataclasses.replace(CFG, scan_layers=True)
  params = _params()
  scanned = stack.scan_params(params, cfg)
  assert scanned["ref_pool"] is params["ref_pool"]  # not a layer: left where it is
  a = encode_references(params, CFG, _refs(), LENGTHS)
  b = encode_references(scanned, cfg, _refs(), LENGTHS)
  np.testing.assert_allclose(a.keys_BxLxKxMxD, b.keys_BxLxKxMxD, atol=TOL, rtol=TOL)


def test_memory_config_default_is_off():
  assert MemoryConfig().reference_keys is False
