"""Token selection (paper §3.3): keep the top-k reference tokens per memory layer and KV head.

Score of token j: the total attention it receives, ``w_j = Σ_i softmax_j(q_i·k_j/√d)``,
computed without causal mask and without RoPE, with ``<ref>`` and padding excluded
(as queries and as keys), summed over the query heads of the GQA group.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def selection_scores(
  q_raw_BxNxHxD, k_raw_BxNxKxD, valid_BxN, selection: str = "attention", rng=None
):
  """Score per (batch, kv head, token): [B, K, N]; padding scores -inf."""
  if selection not in ("attention", "expsum", "random", "first"):  # model.config.SELECTIONS
    raise ValueError(f"selection={selection!r} is not one of attention, expsum, random, first")
  b, n, h, d = q_raw_BxNxHxD.shape
  kv = k_raw_BxNxKxD.shape[2]
  neg = jnp.float32(-jnp.inf)
  if selection == "first":
    scores = jnp.broadcast_to(-jnp.arange(n, dtype=jnp.float32), (b, kv, n))
  elif selection == "random":
    if rng is None:
      raise ValueError("selection='random' needs an rng")
    scores = jax.random.uniform(rng, (b, kv, n))
  else:
    q = q_raw_BxNxHxD.reshape(b, n, kv, h // kv, d).astype(jnp.float32)
    logits = jnp.einsum("bikgd,bjkd->bkgij", q, k_raw_BxNxKxD.astype(jnp.float32)) * d**-0.5
    key_ok = valid_BxN[:, None, None, None, :]
    query_ok = valid_BxN[:, None, None, :, None]
    logits = jnp.where(key_ok, logits, neg)
    if selection == "attention":
      probs = jax.nn.softmax(logits, axis=-1)
      probs = jnp.where(key_ok & query_ok, probs, 0.0)
      scores = probs.sum(axis=(2, 3))
    else:  # "expsum": the paper's unnormalized Σ_i exp(·), ranked in log space (no overflow)
      logits = jnp.where(query_ok, logits, neg)
      scores = jax.nn.logsumexp(logits, axis=(2, 3))
  return jnp.where(valid_BxN[:, None, :], scores, neg)


def top_k_indices(scores_BxKxN, k: int):
  """Indices of the k best tokens per head, in reference order, and their validity.

  Returns (idx_BxKxM, valid_BxM). Right padding means a reference with n < k real tokens
  has exactly its first min(n, k) slots valid, for every head.
  """
  n = scores_BxKxN.shape[-1]
  if k > n:
    raise ValueError(f"tokens_per_head={k} exceeds the encoded length {n}")
  best, idx = jax.lax.top_k(jax.lax.stop_gradient(scores_BxKxN), k)
  valid_BxKxM = jnp.isfinite(best)
  # Reference order (valid first: padding has the largest positions) for inspection.
  order = jnp.argsort(jnp.where(valid_BxKxM, idx, n + idx), axis=-1)
  idx = jnp.take_along_axis(idx, order, axis=-1)
  valid_BxKxM = jnp.take_along_axis(valid_BxKxM, order, axis=-1)
  return idx, valid_BxKxM[:, 0]


def gather_tokens(x_BxNxKxD, idx_BxKxM):
  """x[b, idx[b, k, m], k, :] -> [B, K, M, D]."""
  x_BxKxNxD = x_BxNxKxD.transpose(0, 2, 1, 3)
  return jnp.take_along_axis(x_BxKxNxD, idx_BxKxM[..., None], axis=2)
