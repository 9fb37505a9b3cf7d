"""Training documents ordered so that neighbours in the stream read similar references.

Paper §3.6: in training each chunk retrieves ONE reference and attends to it and to the
references of the previous R-1 chunks (m3jax.train.memory_batch.chunk_windows); at
inference a chunk reads the R references retrieved for it, the gold one among the R-1
most like it (same kind of entity, same wording). With documents in random order the
previous chunks' references are about unrelated entities, often of another kind, so a
model trained with R > 1 can tell its own reference from the others by their kind and
never learns to pick the right one among look-alikes: the paper layout (R = 5) read a
gold reference alone far better than among four retrieved neighbours (docs/design.md,
"Session 27"), and one neighbour beside it was enough to halve exact match ("Session 29").

``data.doc_order="similar"`` puts look-alikes in the same windows. The references are
split into groups of ``doc_group_size`` nearest neighbours (greedy, by the data
pipeline's retrieval similarity); each training document joins the group of the
reference most similar to it; groups come in random order and documents in random order
within a group. A training row then packs documents about neighbouring references, and
the previous chunks' references are hard negatives, as at inference. Host-side numpy,
once, while the data is prepared; O(N²) similarity over N references in batches.
Measured in "Session 29": two retrieved references are read far better (multiple choice
0.578 → 0.715), five not, while a 256-token training row's windows hold 2.5 on average.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from m3jax.data.sparse_embedder import embed_references, top_k


def nearest(embedder, texts: Sequence[str], ref_emb, k: int) -> np.ndarray:
  """The ``k`` references most similar to each text -> int [Q, k], best first; -1 where a
  text shares no word with any reference."""
  ids, scores = top_k(embedder, texts, ref_emb, k)
  return np.where(scores > 0, ids, -1)


def reference_groups(
  embedder, ref_texts: Sequence[str], ref_emb, size: int, rng: np.random.Generator
) -> np.ndarray:
  """Group id of each reference -> int [N]: visiting the references in random order, an
  ungrouped one starts a group with its nearest ungrouped neighbours, ``size`` at most."""
  if size < 1:
    raise ValueError(f"reference groups need size >= 1, got {size}")
  n = len(ref_texts)
  near_NxK = nearest(embedder, ref_texts, ref_emb, min(n, 4 * size))  # itself first
  group = np.full(n, -1, np.int64)
  next_id = 0
  for r in rng.permutation(n):
    if group[r] >= 0:
      continue
    free = [int(m) for m in near_NxK[r] if m >= 0 and m != r and group[m] < 0]
    group[[r] + free[: size - 1]] = next_id
    next_id += 1
  return group


def similar_order(
  embedder, doc_texts: Sequence[str], ref_texts: Sequence[str], size: int, seed: int
) -> np.ndarray:
  """A permutation of the documents: grouped by their nearest reference's group (groups
  in random order, documents in random order within one); a document that shares no word
  with any reference is a group of its own."""
  rng = np.random.default_rng(seed)
  ref_emb = embed_references(embedder, ref_texts)
  group_N = reference_groups(embedder, ref_texts, ref_emb, size, rng)
  top_D = nearest(embedder, doc_texts, ref_emb, 1)[:, 0]
  alone = top_D < 0
  group_D = np.where(alone, 0, group_N[np.maximum(top_D, 0)])
  group_D[alone] = group_N.max(initial=-1) + 1 + np.arange(alone.sum())
  rank = rng.permutation(int(group_D.max(initial=-1)) + 1)
  return np.lexsort((rng.random(len(doc_texts)), rank[group_D]))
