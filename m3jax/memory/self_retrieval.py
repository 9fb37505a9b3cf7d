"""Self-retrieval (paper Remark 2): the model's own memory-layer queries search the bank's keys.

A query chunk is encoded exactly as a reference is (``[<ref>, t_1 … t_T]`` through the
memory layers, ``Transformer.encode``); its per-head queries of one memory layer, with RoPE
at the same positions 1..T that the stored keys got at encoding, score each reference by
ColBERT MaxSim per head::

  score(q, n) = Σ_h Σ_t max_m  q[t, h] · k_n[kv(h), m] / √D

with ``kv(h) = h // (H / K)`` (GQA): query head h searches only the keys of its own KV
head. The logit is the one that layer computes when it attends to that memory (RoPE
included), so "relevant" means "what this layer would attend to". Scoring is exact,
brute force over the whole bank in one jitted function per query batch; the bank's keys of
the chosen layer are read once and kept on the device.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from m3jax.memory import sparsify
from m3jax.model import layers


@functools.partial(jax.jit, static_argnames=("bank_block", "cosine"))
def maxsim_scores(
  q_QxTxHxD, q_valid_QxT, keys_NxKxMxD, key_valid_NxM, *, bank_block: int = 256, cosine=False
):
  """Σ_h Σ_t max_m q·k / √D per (query, reference): float32 [Q, N].

  Query head h reads KV head ``h // (H/K)``. Invalid query tokens add nothing; a
  reference with no valid key scores -inf. The bank is scanned in blocks of
  ``bank_block`` references (memory O(Q·block·H·T·M)). ``cosine``: queries and keys
  L2-normalized first (ColBERT's similarity; no 1/√D), so no reference wins on key norm.
  """
  qn, t, h, d = q_QxTxHxD.shape
  n, kv, m, _ = keys_NxKxMxD.shape
  if h % kv:
    raise ValueError(f"{h} query heads are not a multiple of {kv} KV heads")
  pad = (-n) % bank_block
  q_QxTxHxD, keys_NxKxMxD = q_QxTxHxD.astype(jnp.float32), keys_NxKxMxD.astype(jnp.float32)
  if cosine:
    unit = lambda x: x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    q_QxTxHxD, keys_NxKxMxD = unit(q_QxTxHxD) * d**0.5, unit(keys_NxKxMxD)
  keys = jnp.pad(keys_NxKxMxD, ((0, pad), (0, 0), (0, 0), (0, 0)))
  kvalid = jnp.pad(key_valid_NxM, ((0, pad), (0, 0)))
  blocks = (n + pad) // bank_block
  keys = keys.reshape(blocks, bank_block, kv, m, d)
  kvalid = kvalid.reshape(blocks, bank_block, m)
  q = q_QxTxHxD.reshape(qn, t, kv, h // kv, d) * d**-0.5
  qvalid = q_valid_QxT.astype(jnp.float32)

  def block(args):
    k_BxKxMxD, valid_BxM = args
    logits = jnp.einsum("qtkgd,bkmd->qbkgtm", q, k_BxKxMxD)
    logits = jnp.where(valid_BxM[None, :, None, None, None, :], logits, -jnp.inf)
    best = logits.max(-1)  # [Q, B, K, G, T]
    best = jnp.where(qvalid[:, None, None, None, :] > 0, best, 0.0)
    s = best.sum(axis=(2, 3, 4))
    return jnp.where(valid_BxM.any(-1)[None, :], s, -jnp.inf)

  s = jax.lax.map(block, (keys, kvalid))  # [blocks, Q, B]
  return s.transpose(1, 0, 2).reshape(qn, -1)[:, :n]


def query_vectors(
  params, cfg, tokens_QxT, lengths_Q, *, layer: int, tokens_per_head: int = 0, rope: bool = True
):
  """Per-head queries of memory layer ``layer`` for query chunks: ([Q, T, H, D], valid [Q, T]).

  ``tokens_per_head`` > 0 keeps, per KV-head group, the tokens that receive the most
  attention (the score memory selection uses, m3jax.memory.sparsify); 0 keeps them all.
  """
  from m3jax.model.transformer import Transformer

  enc: Any = Transformer(cfg).apply({"params": params}, tokens_QxT, method=Transformer.encode)
  q_raw = enc.q_raw_LxBxNxHxD[layer]
  t = tokens_QxT.shape[1]
  pos = jnp.broadcast_to(jnp.arange(1, t + 1), tokens_QxT.shape)  # as the stored keys
  q = layers.apply_rope(q_raw, pos, cfg.rope_base) if rope else q_raw
  valid = jnp.arange(t)[None, :] < lengths_Q[:, None]
  if tokens_per_head:
    k = min(tokens_per_head, t)
    scores = sparsify.selection_scores(q_raw, enc.k_raw_LxBxNxKxD[layer], valid, "attention")
    idx, _ = sparsify.top_k_indices(scores, k)  # [Q, K, k]: one token set per KV group
    # Every query token stays in shape; tokens outside the group's top set are masked:
    # the mask is per (query, token) here, so keep tokens chosen by any group.
    chosen = jnp.zeros(valid.shape, bool)
    chosen = chosen.at[jnp.arange(valid.shape[0])[:, None, None], idx].set(True)
    valid = valid & chosen
  return q, valid


class SelfRetriever:
  """Retriever over a bank with the model's own queries (Remark 2).

  ``search`` takes padded query tokens ``[Q, T]`` (pad = -1, from :meth:`tokenize`), not
  embeddings; the keys of ``layer`` for ``ids`` are read from the bank once at construction.
  """

  def __init__(
    self,
    cfg,
    params,
    bank,
    ids: Sequence[str],
    *,
    layer: int = 0,
    tokens_per_head: int = 0,
    cosine: bool = True,
    rope: bool = True,
    query_batch: int = 32,
    read_batch: int = 1024,
  ):
    if not 0 <= layer < cfg.memory.num_memory_layers:
      raise ValueError(
        f"self-retrieval layer={layer} is not a memory layer (0..{cfg.memory.num_memory_layers - 1})"
      )
    self.cfg, self.params, self.layer = cfg, params, layer
    self.tokens_per_head, self.query_batch, self.cosine = tokens_per_head, query_batch, cosine
    self.ids = [str(i) for i in ids]
    keys, masks = [], []
    for s in range(0, len(self.ids), read_batch):
      rows = bank.read(self.ids[s : s + read_batch])
      k, _ = bank.dequantize(rows.keys[:, layer : layer + 1], rows.values[:, layer : layer + 1])
      k = jnp.asarray(k[:, 0], jnp.float32)  # [n, K, M, D]
      if not rope:  # undo RoPE at the stored positions (token_idx + 1): raw keys
        n_, kv_, m_, d_ = k.shape
        pos = jnp.asarray(rows.token_idx[:, layer], jnp.int32).reshape(n_ * kv_, m_) + 1
        k = layers.apply_rope(k.reshape(n_ * kv_, m_, 1, d_), -pos, cfg.rope_base)
        k = k.reshape(n_, kv_, m_, d_)
      keys.append(k.astype(jnp.bfloat16))
      masks.append(jnp.asarray(rows.mask, bool))
    self.keys_NxKxMxD = jnp.concatenate(keys) if keys else None
    self.mask_NxM = jnp.concatenate(masks) if masks else None
    self._queries = jax.jit(
      functools.partial(query_vectors, layer=layer, tokens_per_head=tokens_per_head, rope=rope),
      static_argnums=(1,),
    )

  def __len__(self):
    return len(self.ids)

  def tokenize(self, token_lists: Sequence[Sequence[int]]) -> np.ndarray:
    """Token lists -> int32 [Q, T] padded with -1 (T = the longest, at most ref_len)."""
    cap = self.cfg.memory.ref_len
    t = max([min(len(x), cap) for x in token_lists] + [1])
    out = np.full((len(token_lists), t), -1, np.int32)
    for i, x in enumerate(token_lists):
      x = list(x)[-cap:]  # the chunk's last ref_len tokens
      out[i, : len(x)] = x
    return out

  def search(self, tokens_QxT: np.ndarray, k: int):
    """-> (ids object [Q, k] best first, scores float32 [Q, k])."""
    tokens_QxT = np.asarray(tokens_QxT)
    qn = len(tokens_QxT)
    if self.keys_NxKxMxD is None or not qn:
      return np.full((qn, k), None, object), np.full((qn, k), -np.inf, np.float32)
    lengths = (tokens_QxT >= 0).sum(1).astype(np.int32)
    toks = np.where(tokens_QxT >= 0, tokens_QxT, 0)
    kk = min(k, len(self.ids))
    all_idx, all_s = [], []
    for s in range(0, qn, self.query_batch):
      b = slice(s, s + self.query_batch)
      q, valid = self._queries(self.params, self.cfg, jnp.asarray(toks[b]), jnp.asarray(lengths[b]))
      s_QxN = maxsim_scores(q, valid, self.keys_NxKxMxD, self.mask_NxM, cosine=self.cosine)
      top_s, top_i = jax.lax.top_k(s_QxN, kk)
      all_idx.append(np.asarray(top_i))
      all_s.append(np.asarray(top_s))
    idx, best = np.concatenate(all_idx), np.concatenate(all_s)
    ids = np.full((qn, k), None, object)
    scores = np.full((qn, k), -np.inf, np.float32)
    for qi in range(qn):
      for j in range(kk):
        if np.isfinite(best[qi, j]):
          ids[qi, j] = self.ids[idx[qi, j]]
          scores[qi, j] = best[qi, j]
    return ids, scores
