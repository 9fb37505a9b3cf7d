"""joint_attention against a naive concatenate-mask-softmax reference (float64 numpy)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m3jax.model.joint_attention import joint_attention


def naive_attention(q, k, v, mask, mem_k=None, mem_v=None, mem_mask=None, chunk_len=4):
  """Per query: concatenate its visible context keys and its chunk's valid memory keys."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  b, t, h, d = q.shape
  kv = k.shape[2]
  g = h // kv
  out = np.zeros((b, t, h, d))
  for bi in range(b):
    for ti in range(t):
      for hi in range(h):
        kh = hi // g
        keys = [k[bi, s, kh] for s in range(k.shape[1]) if mask[bi, ti, s]]
        vals = [v[bi, s, kh] for s in range(k.shape[1]) if mask[bi, ti, s]]
        if mem_k is not None:
          c = 0 if mem_k.shape[1] == 1 else ti // chunk_len
          for r in range(mem_k.shape[2]):
            for m in range(mem_k.shape[4]):
              if mem_mask[bi, c, r, m]:
                keys.append(np.asarray(mem_k[bi, c, r, kh, m], np.float64))
                vals.append(np.asarray(mem_v[bi, c, r, kh, m], np.float64))
        logits = np.stack(keys) @ q[bi, ti, hi] / np.sqrt(d)
        p = np.exp(logits - logits.max())
        out[bi, ti, hi] = (p / p.sum()) @ np.stack(vals)
  return out


def _inputs(seed, b, t, h, kv, d, chunks, refs, toks, chunk_len, valid_frac):
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(b, t, h, d)).astype(np.float32)
  k = rng.normal(size=(b, t + 1, kv, d)).astype(np.float32)
  v = rng.normal(size=(b, t + 1, kv, d)).astype(np.float32)
  key_idx = np.arange(t + 1) - 1  # slot 0 = sink
  mask = np.broadcast_to(key_idx[None, :] <= np.arange(t)[:, None], (b, t, t + 1))
  mem_k = rng.normal(size=(b, chunks, refs, kv, toks, d)).astype(np.float32)
  mem_v = rng.normal(size=(b, chunks, refs, kv, toks, d)).astype(np.float32)
  mem_mask = rng.random((b, chunks, refs, toks)) < valid_frac
  return q, k, v, mask, mem_k, mem_v, mem_mask


@pytest.mark.parametrize(
  "t,chunk_len,h,kv,valid_frac",
  [
    (8, 4, 4, 2, 1.0),  # 2 full chunks, GQA group 2
    (11, 4, 6, 2, 0.5),  # 3 chunks, the last partial; group 3; partially valid memories
    (12, 3, 4, 4, 0.3),  # 4 chunks, MHA (group 1)
    (5, 8, 4, 1, 0.7),  # 1 chunk, MQA (group 4)
  ],
)
def test_joint_attention_matches_naive(t, chunk_len, h, kv, valid_frac):
  chunks = -(-t // chunk_len)
  q, k, v, mask, mk, mv, mm = _inputs(t, 2, t, h, kv, 8, chunks, 3, 2, chunk_len, valid_frac)
  got = joint_attention(
    jnp.asarray(q),
    jnp.asarray(k),
    jnp.asarray(v),
    jnp.asarray(mask),
    (jnp.asarray(mk), jnp.asarray(mv), jnp.asarray(mm)),
    chunk_len=chunk_len,
  )
  want = naive_attention(q, k, v, mask, mk, mv, mm, chunk_len)
  # float32 logits/softmax over <= ~20 keys of O(1) inputs: ~1e-6 relative error.
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5)


def test_no_memory_matches_naive():
  q, k, v, mask, *_ = _inputs(0, 2, 7, 4, 2, 8, 1, 1, 1, 4, 1.0)
  got = joint_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(got), naive_attention(q, k, v, mask), rtol=2e-5, atol=2e-5)


def test_fully_masked_memory_is_bitwise_no_memory():
  q, k, v, mask, mk, mv, mm = _inputs(1, 2, 9, 4, 2, 8, 3, 2, 2, 4, 1.0)
  plain = joint_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(mask))
  masked = joint_attention(
    jnp.asarray(q),
    jnp.asarray(k),
    jnp.asarray(v),
    jnp.asarray(mask),
    (jnp.asarray(mk), jnp.asarray(mv), jnp.zeros_like(jnp.asarray(mm))),
    chunk_len=4,
  )
  np.testing.assert_array_equal(np.asarray(plain), np.asarray(masked))


def test_memory_mass_sums_probability_on_memory():
  q, k, v, mask, mk, mv, mm = _inputs(2, 1, 4, 2, 1, 8, 1, 2, 2, 4, 1.0)
  _, mass = joint_attention(
    jnp.asarray(q),
    jnp.asarray(k),
    jnp.asarray(v),
    jnp.asarray(mask),
    (jnp.asarray(mk), jnp.asarray(mv), jnp.asarray(mm)),
    chunk_len=4,
    return_memory_mass=True,
  )
  # Same mass from the naive softmax: memory share of exp-weights.
  qd = q.astype(np.float64) / np.sqrt(8)
  for t in range(4):
    ctx = [k[0, s, 0] @ qd[0, t, 0] for s in range(5) if mask[0, t, s]]
    mem = [mk[0, 0, r, 0, m] @ qd[0, t, 0] for r in range(2) for m in range(2)]
    allv = np.array(ctx + mem)
    p = np.exp(allv - allv.max())
    np.testing.assert_allclose(float(mass[0, t, 0]), p[len(ctx) :].sum() / p.sum(), rtol=1e-5)


def test_wrong_chunk_count_is_rejected():
  q, k, v, mask, mk, mv, mm = _inputs(3, 1, 9, 2, 1, 8, 2, 1, 1, 4, 1.0)
  with pytest.raises(ValueError, match="memory chunks"):
    joint_attention(
      jnp.asarray(q),
      jnp.asarray(k),
      jnp.asarray(v),
      jnp.asarray(mask),
      (jnp.asarray(mk), jnp.asarray(mv), jnp.asarray(mm)),
      chunk_len=4,
    )


@pytest.mark.integration
@pytest.mark.parametrize("t,chunk_len,h,kv,chunks", [(11, 4, 6, 2, 3), (5, 8, 4, 1, 1)])
def test_flat_fused_attention_equals_dense(t, chunk_len, h, kv, chunks):
  """The single-call formulation (cuDNN-ready) computes the same function (XLA here)."""
  q, k, v, mask, mk, mv, mm = _inputs(7, 2, t, h, kv, 8, chunks, 3, 2, chunk_len, 0.6)
  args = (
    jnp.asarray(q),
    jnp.asarray(k),
    jnp.asarray(v),
    jnp.asarray(mask),
    (jnp.asarray(mk), jnp.asarray(mv), jnp.asarray(mm)),
  )
  dense = joint_attention(*args, chunk_len=chunk_len)
  flat = joint_attention(*args, chunk_len=chunk_len, impl="flat")
  np.testing.assert_allclose(np.asarray(flat), np.asarray(dense), rtol=2e-5, atol=2e-5)
  g_dense = jax.grad(lambda qq: joint_attention(qq, *args[1:], chunk_len=chunk_len).sum())(args[0])
  g_flat = jax.grad(
    lambda qq: joint_attention(qq, *args[1:], chunk_len=chunk_len, impl="flat").sum()
  )(args[0])
  np.testing.assert_allclose(np.asarray(g_flat), np.asarray(g_dense), rtol=1e-4, atol=1e-4)
