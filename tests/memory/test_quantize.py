"""Product quantization: uneven sub-spaces, exact round trip on centroids, error bounds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m3jax.memory import quantize
from m3jax.memory.build import valid_vectors
from m3jax.memory.encode import encode_references, to_memory_kv
from m3jax.model.transformer import Transformer


def test_uneven_split_layout_round_trips():
  lay = quantize.SubspaceLayout(80, 14)  # the paper's 14 bytes per 80-dim vector
  assert sorted(lay.widths) == [5] * 4 + [6] * 10 and sum(lay.widths) == 80
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 80)), jnp.float32)
  parts = quantize.split(x, lay)
  assert parts.shape == (3, 14, 6)
  np.testing.assert_array_equal(quantize.merge(parts, lay), x)
  with pytest.raises(ValueError, match="bytes per vector"):
    quantize.SubspaceLayout(16, 17)


def test_vectors_on_centroids_decode_exactly_and_decode_jits():
  rng = np.random.default_rng(0)
  d, s = 10, 3  # uneven: widths 4, 3, 3
  lay = quantize.SubspaceLayout(d, s)
  cb = np.zeros((s, 256, lay.width), np.float32)
  for j, w in enumerate(lay.widths):
    cb[j, :, :w] = rng.normal(size=(256, w))
  codes = rng.integers(0, 256, (5, 7, s)).astype(np.uint8)
  x = jax.jit(quantize.decode, static_argnums=2)(jnp.asarray(codes), jnp.asarray(cb), d)
  assert x.shape == (5, 7, d)
  np.testing.assert_array_equal(quantize.encode(x, cb), codes)


def test_gaussian_error_within_twice_the_rate_distortion_bound():
  """Held-out i.i.d. N(0,1) data, 8 bits per w-dim sub-space: Shannon's distortion-rate
  bound gives relative MSE >= 2^(-16/w); Lloyd k-means at 256 levels lands within ~1.7x
  of it (high-resolution quantization theory), so 2x is a safe upper bound and anything
  below the Shannon bound would mean the test data leaked into training."""
  rng = np.random.default_rng(0)
  d, s = 16, 4
  train = rng.normal(size=(2, 1, 4096, d)).astype(np.float32)
  test = rng.normal(size=(2048, d)).astype(np.float32)
  cb = quantize.train_codebooks(train, s, iters=15)
  err = quantize.relative_mse(test, quantize.decode(quantize.encode(test, cb[1, 0]), cb[1, 0], d))
  shannon = 2 ** (-16 / (d // s))
  assert shannon < err < 2 * shannon


@pytest.mark.integration
def test_dequantized_memories_barely_change_logits(tiny_cfg, tiny_params):
  """PQ keeps most of what memory does to the logits: the logit change from quantizing
  is under a third of the change from removing the memories altogether (4 bytes per
  16-dim vector, i.e. 4 dims per byte, a little finer than the paper's 5.7)."""
  cfg = tiny_cfg
  rng = np.random.default_rng(0)
  n_refs = 48
  tokens = jnp.asarray(rng.integers(8, cfg.vocab_size, (n_refs, cfg.memory.ref_len)), jnp.int32)
  lengths = jnp.full((n_refs,), cfg.memory.ref_len, jnp.int32)
  enc = jax.jit(lambda p, t, n: encode_references(p, cfg, t, n))(tiny_params, tokens, lengths)
  k, v, mask = (np.asarray(a) for a in (enc.keys_BxLxKxMxD, enc.values_BxLxKxMxD, enc.mask_BxM))
  cb = quantize.train_codebooks(valid_vectors(k, v, mask), 4, iters=15)
  kc, vc = quantize.encode_memories(k, v, cb)
  kh = quantize.decode_memories(jnp.asarray(kc), jnp.asarray(cb[0]), cfg.head_dim, 1)
  vh = quantize.decode_memories(jnp.asarray(vc), jnp.asarray(cb[1]), cfg.head_dim, 1)
  rel = quantize.relative_mse(
    valid_vectors(k, v, mask), valid_vectors(np.asarray(kh), np.asarray(vh), mask)
  )
  assert rel < 0.2
  ids = jnp.arange(10).reshape(1, 2, 5)
  ref_mask = jnp.ones((1, 2, 5), bool)
  ctx = jnp.asarray(rng.integers(8, cfg.vocab_size, (1, 2 * cfg.memory.chunk_len)), jnp.int32)
  model = Transformer(cfg)
  fwd = jax.jit(lambda m: model.apply({"params": tiny_params}, ctx, m))
  exact = fwd(to_memory_kv(enc, ids, ref_mask))
  deq = fwd(to_memory_kv(enc.replace(keys_BxLxKxMxD=kh, values_BxLxKxMxD=vh), ids, ref_mask))
  none = model.apply({"params": tiny_params}, ctx)
  change_pq = float(jnp.abs(deq - exact).mean())
  change_none = float(jnp.abs(none - exact).mean())
  print(f"relative mse {rel:.4f}; logit change: pq {change_pq:.2e}, no memory {change_none:.2e}")
  assert change_pq < change_none / 3
