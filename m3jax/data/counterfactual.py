"""Counterfactual memory augmentation: training tokens that only memory can predict.

In stage 2 a training row and its pre-retrieved references state the same facts, and on a
small corpus the weights memorize those facts within a few epochs: predicting a value
from parameters is then as good as reading it from memory, and reading is never learned
(issue #10: training loss 0.001 on a 2,400-document world while exact match stays 0.02).

This module breaks that shortcut without changing the world. For each training row, the
tokens it shares with its references (minus the most frequent reference tokens, which are
template words, and the special ids) are, each with probability ``rate``, replaced by a
fresh token drawn from the references' unigram distribution, consistently in the row and
in every one of its references. The swapped fact is then true in this batch's memory and
nowhere in the weights, so the only way to predict it is to read it. The replacement is
injective within a row (two different tokens never collapse into one) and never a token
already present in the row or its references.

Pure numpy on the host, outside ``jit``; the per-batch generator is seeded from the
iterator's position, so a resumed run swaps identically.
"""

from __future__ import annotations

import numpy as np

from m3jax.data.vocab import NUM_SPECIAL


def _valid_tokens(ref_tokens_NxL: np.ndarray, ref_lengths_N: np.ndarray) -> np.ndarray:
  positions_L = np.arange(ref_tokens_NxL.shape[-1])
  return ref_tokens_NxL[positions_L < ref_lengths_N[..., None]]


def stop_token_mask(
  ref_tokens_NxL: np.ndarray, ref_lengths_N: np.ndarray, vocab_size: int, num_stop: int
) -> np.ndarray:
  """bool [V]: tokens never swapped: the special ids and the ``num_stop`` most frequent
  tokens of the knowledge base (its template words: "is", "of", attribute names)."""
  counts_V = np.bincount(_valid_tokens(ref_tokens_NxL, ref_lengths_N), minlength=vocab_size)
  stop_V = np.zeros(vocab_size, bool)
  stop_V[:NUM_SPECIAL] = True
  if num_stop > 0:
    stop_V[np.argsort(-counts_V, kind="stable")[:num_stop]] = True
  return stop_V


def replacement_weights(
  ref_tokens_NxL: np.ndarray, ref_lengths_N: np.ndarray, stop_V: np.ndarray
) -> np.ndarray:
  """float [V], sums to 1: the references' unigram distribution over swappable tokens, so
  a replacement looks like a value the knowledge base could hold."""
  counts_V = np.bincount(
    _valid_tokens(ref_tokens_NxL, ref_lengths_N), minlength=stop_V.shape[0]
  ).astype(np.float64)
  counts_V[stop_V] = 0.0
  total = counts_V.sum()
  if total == 0:
    raise ValueError(
      "counterfactual swap: the references have no token outside the stop list; lower "
      "data.memory_swap_stop_tokens or set data.memory_swap_rate=0"
    )
  return counts_V / total


def swap_row(
  targets_T: np.ndarray,
  ref_tokens_CxN: np.ndarray,
  ref_lengths_C: np.ndarray,
  stop_V: np.ndarray,
  weights_V: np.ndarray,
  rate: float,
  rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
  """One row: returns (targets_T, ref_tokens_CxN) with shared tokens swapped; the inputs
  are not changed in place. Padding beyond ``ref_lengths_C`` is left as it is."""
  valid_CxN = np.arange(ref_tokens_CxN.shape[-1]) < ref_lengths_C[:, None]
  ref_set = np.unique(ref_tokens_CxN[valid_CxN])
  shared = np.intersect1d(np.unique(targets_T), ref_set)
  shared = shared[~stop_V[shared]]
  chosen = shared[rng.random(shared.shape[0]) < rate]
  if chosen.size == 0:
    return targets_T, ref_tokens_CxN
  taken_V = stop_V.copy()
  taken_V[targets_T] = True
  taken_V[ref_set] = True
  p_V = np.where(taken_V, 0.0, weights_V)
  available = int(np.count_nonzero(p_V))
  chosen = chosen[:available]  # a tiny vocabulary can run out of fresh tokens
  if chosen.size == 0:
    return targets_T, ref_tokens_CxN
  fresh = rng.choice(p_V.shape[0], size=chosen.size, replace=False, p=p_V / p_V.sum())
  table_V = np.arange(stop_V.shape[0], dtype=targets_T.dtype)
  table_V[chosen] = fresh
  refs = ref_tokens_CxN.copy()
  refs[valid_CxN] = table_V[ref_tokens_CxN[valid_CxN]]
  return table_V[targets_T], refs


def swap_batch(
  batch: dict,
  stop_V: np.ndarray,
  weights_V: np.ndarray,
  rate: float,
  rng: np.random.Generator,
  bos_id: int,
) -> dict:
  """A batch dict (see m3jax.data.pipeline) with every row swapped; ``inputs`` are rebuilt
  from the swapped ``targets`` so the two stay shifted by one."""
  targets_BxT = batch["targets"].copy()
  refs_BxCxN = batch["ref_tokens"].copy()
  for b in range(targets_BxT.shape[0]):
    targets_BxT[b], refs_BxCxN[b] = swap_row(
      targets_BxT[b], refs_BxCxN[b], batch["ref_lengths"][b], stop_V, weights_V, rate, rng
    )
  inputs_BxT = np.empty_like(targets_BxT)
  inputs_BxT[:, 0] = bos_id
  inputs_BxT[:, 1:] = targets_BxT[:, :-1]
  return dict(batch, inputs=inputs_BxT, targets=targets_BxT, ref_tokens=refs_BxCxN)
