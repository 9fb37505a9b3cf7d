"""Paper Eq. (6): the overlap between a text t and a reference r (token ids).

  overlap(t, r) = (1/|r|) · max{ N : i_1<…<i_N, j_1<…<j_N, i_N − i_1 ≤ 2|r|, t_{i_k} = r_{j_k} }

i.e. the longest common subsequence of t and r, over |r|, where the matched positions in t
span at most ``max_span_factor·|r|``. Any such matching lies inside the window
t[i_1 : i_1 + 2|r| + 1], and any common subsequence of such a window obeys the span limit,
so the value is exactly ``max_s LCS(t[s : s+2|r|+1], r) / |r|`` over window starts s (only
starts where t[s] occurs in r can be optimal).

Every window is run at once with the bit-parallel LCS of Allison & Dix / Hyyrö: one row of
the LCS table is a bit vector over r, updated with ``V ← (V + U) | (V − U)``, U = V & match.
That is O(|t| · 2|r| · ⌈|r|/64⌉) word operations vectorized in numpy, a few ms for the
paper's 2048-token sequence against a 128-token reference.

ONE function, ``overlap(a, b)``, always normalized by its SECOND argument's length; every
filter in m3jax calls it (through the two functions below) with a documented order
(DESIGN.md §2, "leakage filter"):

  * training (``leaks`` / ``overlap_many``; data/pretrieval.py): drop a reference whose
    overlap with the training *sequence* exceeds 0.9: ``overlap(sequence, reference)``,
    normalized by the **reference** (a reference copied into the sequence scores 1);
  * evaluation anti-copy (``anti_copy_keep``; the feeder's ``anti_copy_filter``, hence QA,
    RAG and the demo): drop a reference that contains more than 2/3 of the *question*:
    ``overlap(reference, question)``, normalized by the **question** (App. C: a reference
    that contains the question scores >= 80% whatever its length, while a short fact that
    merely shares the entity name with the question is kept).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

TRAIN_THRESHOLD = 0.9
EVAL_THRESHOLD = 2.0 / 3.0
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)


def _as_ids(x) -> np.ndarray:
  arr = np.asarray(x)
  if arr.ndim != 1:
    raise ValueError(f"overlap expects 1-D token id sequences, got shape {arr.shape}")
  return arr.astype(np.int64, copy=False)


def _popcount(x: np.ndarray) -> np.ndarray:
  """Set bits per uint64 (np.bitwise_count needs numpy >= 2.0)."""
  if hasattr(np, "bitwise_count"):
    return np.bitwise_count(x).astype(np.int64)
  return np.unpackbits(x.view(np.uint8).reshape(x.shape + (8,)), axis=-1).sum(-1)


def _add_words(a_NxW: np.ndarray, b_NxW: np.ndarray) -> np.ndarray:
  """Multi-word unsigned addition, little-endian words, final carry dropped."""
  out = np.empty_like(a_NxW)
  carry = np.zeros(a_NxW.shape[0], bool)
  for w in range(a_NxW.shape[1]):
    tmp = a_NxW[:, w] + b_NxW[:, w]
    c1 = tmp < a_NxW[:, w]
    s = tmp + carry.astype(np.uint64)
    carry = c1 | (s < tmp)
    out[:, w] = s
  return out


def overlap_many(t_tokens, refs: Sequence, max_span_factor: int = 2) -> np.ndarray:
  """Eq. (6) overlap of one text with each of several references -> float64 [len(refs)].

  An empty reference scores 0. All (reference, window) pairs share one bit-parallel sweep.
  """
  t = _as_ids(t_tokens)
  refs = [_as_ids(r) for r in refs]
  out = np.zeros(len(refs), np.float64)
  live = [b for b, r in enumerate(refs) if len(r) and len(t)]
  if not live:
    return out
  n = len(t)
  t_uniq, t_inv = np.unique(t, return_inverse=True)
  u = len(t_uniq)
  words = max((len(refs[b]) + 63) // 64 for b in live)
  # table[b, v] = bit mask over the positions of ref b equal to t's v-th distinct token;
  # row u is all-zero and stands for "outside the window".
  table_BxUxW = np.zeros((len(live), u + 1, words), np.uint64)
  starts, owners, spans = [], [], []
  top_mask_BxW = np.zeros((len(live), words), np.uint64)
  for i, b in enumerate(live):
    r = refs[b]
    m = len(r)
    pos_in_t = np.searchsorted(t_uniq, r)
    pos_in_t = np.minimum(pos_in_t, u - 1)
    present = t_uniq[pos_in_t] == r
    for j in np.nonzero(present)[0]:
      table_BxUxW[i, pos_in_t[j], j // 64] |= np.uint64(1) << np.uint64(j % 64)
    for w in range(words):
      bits = min(max(m - 64 * w, 0), 64)
      top_mask_BxW[i, w] = _ALL if bits == 64 else np.uint64((1 << bits) - 1)
    # A window can only be optimal if it starts on a token that occurs in r.
    in_r = np.isin(t, r[present])
    s = np.nonzero(in_r)[0]
    starts.append(s)
    owners.append(np.full(len(s), i))
    spans.append(max_span_factor * m + 1)
  starts = np.concatenate(starts)
  owners = np.concatenate(owners)
  if not len(starts):
    return out
  span_of = np.asarray(spans)[owners]
  mask_NxW = top_mask_BxW[owners]
  v_NxW = mask_NxW.copy()
  for k in range(max(spans)):
    pos = starts + k
    ok = (pos < n) & (k < span_of)
    tok = np.where(ok, t_inv[np.minimum(pos, n - 1)], u)
    match_NxW = table_BxUxW[owners, tok]
    u_NxW = v_NxW & match_NxW
    v_NxW = (_add_words(v_NxW, u_NxW) | (v_NxW ^ u_NxW)) & mask_NxW
  zeros_N = (_popcount(mask_NxW) - _popcount(v_NxW)).sum(-1)
  best = np.zeros(len(live), np.int64)
  np.maximum.at(best, owners, zeros_N)
  for i, b in enumerate(live):
    out[b] = best[i] / len(refs[b])
  return out


def overlap(t_tokens, r_tokens, max_span_factor: int = 2) -> float:
  """Eq. (6): LCS(t, r) / |r| with the matched span in t at most ``max_span_factor·|r|``."""
  return float(overlap_many(t_tokens, [r_tokens], max_span_factor)[0])


def leaks(sequence_tokens, ref_tokens, threshold: float = TRAIN_THRESHOLD) -> bool:
  """Training leakage filter: True when the reference must not be paired with the sequence.

  ``overlap(sequence, reference) > threshold``: normalized by the reference.
  """
  return overlap(sequence_tokens, ref_tokens) > threshold


def anti_copy_keep(
  question_tokens, refs: Sequence, threshold: float = EVAL_THRESHOLD
) -> np.ndarray:
  """Evaluation anti-copy filter -> bool [len(refs)], False for references to drop.

  A reference is dropped when it contains more than ``threshold`` of the question as a
  (span-limited) subsequence: ``overlap(reference, question) > threshold``, normalized by
  the question.
  """
  q = _as_ids(question_tokens)
  if not len(q):
    return np.ones(len(refs), bool)
  scores = np.array([overlap(r, q) for r in refs], np.float64)
  return scores <= threshold
