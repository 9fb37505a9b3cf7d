"""Token selection vs a naive numpy score, and k = reference length == dense memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m3jax.memory import sparsify
from m3jax.memory.encode import encode_references, to_memory_kv
from m3jax.model.memory_kv import MemoryKV
from m3jax.model.transformer import Transformer


def naive_scores(q_BxNxHxD, k_BxNxKxD, valid_BxN, selection):
  """Per kv head: Σ over its query heads and valid queries of softmax_j / exp (float64)."""
  b, n, h, d = q_BxNxHxD.shape
  kv = k_BxNxKxD.shape[2]
  g = h // kv
  out = np.full((b, kv, n), -np.inf)
  for bi in range(b):
    v = np.nonzero(valid_BxN[bi])[0]
    for kh in range(kv):
      total = np.zeros(len(v))
      for hh in range(kh * g, (kh + 1) * g):
        logits = q_BxNxHxD[bi, v, hh] @ k_BxNxKxD[bi, v, kh].T / np.sqrt(d)
        e = np.exp(logits - (logits.max(1, keepdims=True) if selection == "attention" else 0))
        total += (e / e.sum(1, keepdims=True)).sum(0) if selection == "attention" else e.sum(0)
      out[bi, kh, v] = total if selection == "attention" else np.log(total)
  return out


@pytest.mark.parametrize("selection", ["attention", "expsum"])
def test_selection_matches_naive_numpy(selection):
  rng = np.random.default_rng(0)
  b, n, h, kv, d, k = 3, 12, 6, 2, 8, 4  # GQA: 3 query heads per kv head
  q = rng.normal(size=(b, n, h, d))
  kk = rng.normal(size=(b, n, kv, d))
  lengths = np.array([12, 7, 3])  # the last is shorter than k: masked slots
  valid = np.arange(n)[None] < lengths[:, None]
  scores = np.asarray(
    sparsify.selection_scores(
      jnp.asarray(q, jnp.float32), jnp.asarray(kk, jnp.float32), jnp.asarray(valid), selection
    )
  )
  want = naive_scores(q, kk, valid, selection)
  fin = np.isfinite(want)
  assert (np.isfinite(scores) == fin).all()
  np.testing.assert_allclose(scores[fin], want[fin], rtol=1e-4)  # float32 vs float64
  idx, mask = sparsify.top_k_indices(jnp.asarray(scores), k)
  idx, mask = np.asarray(idx), np.asarray(mask)
  for bi in range(b):
    m = min(k, lengths[bi])
    assert mask[bi].tolist() == [True] * m + [False] * (k - m)
    for kh in range(kv):
      best = np.argsort(-np.where(fin[bi, kh], want[bi, kh], -np.inf), kind="stable")[:m]
      assert sorted(idx[bi, kh, :m].tolist()) == sorted(best.tolist())


@pytest.mark.integration
def test_k_equal_reference_length_is_the_dense_memory(tiny_cfg, tiny_params):
  """Keeping every token and attending to it == attending to the full reference K/V."""
  cfg = tiny_cfg
  n = cfg.memory.ref_len
  rng = np.random.default_rng(1)
  tokens = jnp.asarray(rng.integers(8, cfg.vocab_size, (2, n)), jnp.int32)
  lengths = jnp.asarray([n, n - 5], jnp.int32)
  enc = jax.jit(lambda p, t, ln: encode_references(p, cfg, t, ln, tokens_per_head=n))(
    tiny_params, tokens, lengths
  )
  idx = np.asarray(enc.token_idx_BxLxKxM)
  mask = np.asarray(enc.mask_BxM)
  for bi, ln in enumerate([n, n - 5]):
    assert mask[bi].sum() == ln
    # every valid position kept exactly once, per layer and head, in reference order
    assert (idx[bi, ..., :ln] == np.arange(ln)).all()
  # Naive dense memory: the reference's full per-layer K/V straight from the encoder.
  layers = jax.jit(
    lambda p, t: Transformer(cfg).apply({"params": p}, t, method=Transformer.encode)
  )(tiny_params, tokens)
  dense_k = jnp.transpose(layers.k_LxBxNxKxD, (0, 1, 3, 2, 4))  # [L, B, K, N, D]
  dense_v = jnp.transpose(layers.v_LxBxNxKxD, (0, 1, 3, 2, 4))
  ids = jnp.asarray([[[0, 1]]])  # one chunk reading both references
  ref_mask = jnp.ones((1, 1, 2), bool)
  mem = to_memory_kv(enc, ids, ref_mask)
  dense = MemoryKV(dense_k[:, None, None], dense_v[:, None, None], jnp.asarray(mask)[None, None])
  ctx = jnp.asarray(rng.integers(8, cfg.vocab_size, (1, cfg.memory.chunk_len)), jnp.int32)
  fwd = jax.jit(lambda m: Transformer(cfg).apply({"params": tiny_params}, ctx, m))
  got, want = fwd(mem), fwd(dense)
  plain = jax.jit(lambda: Transformer(cfg).apply({"params": tiny_params}, ctx))()
  np.testing.assert_allclose(got, want, atol=1e-5)  # same math, float32 reordering only
  assert np.abs(np.asarray(want - plain)).max() > 1e-4  # the memory is actually read


def test_selection_rejects_bad_input():
  with pytest.raises(ValueError, match="selection"):
    sparsify.selection_scores(
      jnp.zeros((1, 4, 2, 4)), jnp.zeros((1, 4, 1, 4)), jnp.ones((1, 4), bool), "bogus"
    )
  with pytest.raises(ValueError, match="tokens_per_head"):
    sparsify.top_k_indices(jnp.zeros((1, 1, 4)), 5)
