"""Self-retrieval (Remark 2): MaxSim against a naive loop, per-head isolation, and finding a
reference from its own text in a real TensorStore bank."""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from m3jax.memory.encode import encode_references
from m3jax.memory.self_retrieval import SelfRetriever, maxsim_scores
from m3jax.memory.layout import BankLayout
from m3jax.memory.store import MemoryBank


def naive_maxsim(q_QxTxHxD, qvalid, k_NxKxMxD, kvalid):
  """Loop reference: query head h searches KV head h // (H/K)."""
  qn, t, h, d = q_QxTxHxD.shape
  n, kv, m, _ = k_NxKxMxD.shape
  out = np.zeros((qn, n))
  for a in range(qn):
    for b in range(n):
      if not kvalid[b].any():
        out[a, b] = -np.inf
        continue
      total = 0.0
      for head in range(h):
        g = head // (h // kv)
        for i in range(t):
          if not qvalid[a, i]:
            continue
          total += max(
            float(q_QxTxHxD[a, i, head] @ k_NxKxMxD[b, g, j]) / np.sqrt(d)
            for j in range(m)
            if kvalid[b, j]
          )
      out[a, b] = total
  return out


def _random(seed, qn=3, t=5, h=4, n=7, kv=2, m=3, d=8):
  r = np.random.default_rng(seed)
  q = r.normal(size=(qn, t, h, d)).astype(np.float32)
  k = r.normal(size=(n, kv, m, d)).astype(np.float32)
  qvalid = r.random((qn, t)) < 0.7
  kvalid = r.random((n, m)) < 0.7
  kvalid[0] = False  # a reference with no valid key
  return q, qvalid, k, kvalid


def test_maxsim_equals_naive_loop():
  q, qv, k, kv = _random(0)
  got = np.asarray(maxsim_scores(q, qv, k, kv, bank_block=4))  # 7 refs: 2 blocks, padded
  np.testing.assert_allclose(got, naive_maxsim(q, qv, k, kv), rtol=1e-5, atol=1e-5)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  cos = np.asarray(maxsim_scores(q, qv, k, kv, cosine=True))
  want = naive_maxsim(unit(q) * np.sqrt(q.shape[-1]), qv, unit(k), kv)
  np.testing.assert_allclose(cos, want, rtol=1e-5, atol=1e-5)


def test_head_h_searches_only_its_kv_head():
  # A reference whose only large key sits in KV head 1 must not help query heads 0-1
  # (KV head 0's group); mixing heads would move the score.
  q, qv, k, kv = _random(1)
  qv[:] = True
  kv[:] = True
  q2 = q.copy()
  q2[..., 2:, :] = 0.0  # only heads 0, 1 (KV group 0) speak
  base = np.asarray(maxsim_scores(q2, qv, k, kv))
  k2 = k.copy()
  k2[:, 1] *= 100.0  # change only KV head 1
  np.testing.assert_allclose(np.asarray(maxsim_scores(q2, qv, k2, kv)), base, rtol=1e-6)
  k3 = k.copy()
  k3[:, 0] *= 100.0  # KV head 0 does move it
  assert not np.allclose(np.asarray(maxsim_scores(q2, qv, k3, kv)), base)


@pytest.fixture
def tied_params(tiny_params, tiny_cfg):
  """Random tiny params with memory layer 0's query projection tied to its key projection
  (query head h = KV head h // group). Layer 0's q and k then see the same normed
  embedding, so a token's query equals its own stored key (same RoPE position) and
  q·k is maximal, by Cauchy-Schwarz, against the key of the same token: a reference's
  own text must score it highest. Random untied weights carry no such guarantee."""
  p = nn.meta.unbox(tiny_params)
  attn = p["layer_0"]["attn"]
  g = tiny_cfg.num_heads // tiny_cfg.num_kv_heads
  attn = {**attn, "q": jnp.repeat(attn["k"], g, axis=1)}
  return {**p, "layer_0": {**p["layer_0"], "attn": attn}}


def test_own_text_finds_its_reference_top1(tmp_path, tied_params, tiny_cfg):
  n, length = 12, tiny_cfg.memory.ref_len
  r = np.random.default_rng(0)
  # Disjoint random vocabularies per reference: no two references share a token.
  vocab = r.permutation(np.arange(10, tiny_cfg.vocab_size))[: n * length].reshape(n, length)
  toks = jnp.asarray(vocab, jnp.int32)
  enc = encode_references(tied_params, tiny_cfg, toks, jnp.full((n,), length))
  bank = MemoryBank.create(str(tmp_path / "bank"), BankLayout.from_model(tiny_cfg))
  ids = [f"r{i}" for i in range(n)]
  bank.append(
    ids,
    np.asarray(enc.keys_BxLxKxMxD),
    np.asarray(enc.values_BxLxKxMxD),
    np.asarray(enc.mask_BxM),
    np.asarray(enc.token_idx_BxLxKxM),
  )
  ret = SelfRetriever(tiny_cfg, tied_params, bank, ids, layer=0, query_batch=5)
  got, scores = ret.search(ret.tokenize([list(v) for v in vocab]), 5)
  assert list(got[:, 0]) == ids
  # RoPE stripped from both sides (raw query vs stored key un-rotated at its position).
  raw = SelfRetriever(tiny_cfg, tied_params, bank, ids, layer=0, rope=False)
  assert list(raw.search(raw.tokenize([list(v) for v in vocab]), 1)[0][:, 0]) == ids
  assert np.all(np.diff(scores, axis=1) <= 0)
  # Sparsified queries (the top tokens by attention received, the score that selected
  # the bank's keys) keep the tokens whose keys were stored: still top-1.
  sparse = SelfRetriever(tiny_cfg, tied_params, bank, ids, layer=0, tokens_per_head=4)
  got, _ = sparse.search(sparse.tokenize([list(v) for v in vocab]), 1)
  assert list(got[:, 0]) == ids
