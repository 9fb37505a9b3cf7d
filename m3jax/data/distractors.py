"""Distractor memories: a share of training chunks read a reference about something else.

With one reference per chunk retrieved with the chunk's own text (``small``'s layout),
every memory a training chunk reads is about that chunk, and the swap makes it the only
source of the values they share. A model trained so trusts any memory. At decoding a
chunk reads what the previous chunk retrieved, which on held-out prose is about another
entity nine times in ten, and the model copies from it: causal perplexity with memory
was worse than without (docs/design.md, "Session 36"). The paper's training window (a
chunk reads the previous four chunks' references beside its own, SPEC §3.6) shows
unrelated memories as a matter of course; this does the same for any window.

``data.memory_distractor_rate = p``: in memory stages, each chunk that reads a reference
reads, with probability p, another reference drawn uniformly from the knowledge base
instead. Applied to reference indices before the swap, so a distracted chunk's values
are swapped only where the drawn reference happens to hold them. Training only.
"""

from __future__ import annotations

import numpy as np


def redraw(ref_index_BxC: np.ndarray, rate: float, rng: np.random.Generator, num_refs: int):
  """-> a copy of ``ref_index_BxC`` where each chunk with a reference (index >= 0) holds,
  with probability ``rate``, another index drawn uniformly from [0, num_refs) minus its
  own. Chunks without a reference (negative index) stay without."""
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f"data.memory_distractor_rate={rate} must be in [0, 1]")
  out = np.array(ref_index_BxC, copy=True)
  if rate == 0.0 or num_refs < 2:
    return out
  pick_BxC = (out >= 0) & (rng.random(out.shape) < rate)
  shift = 1 + rng.integers(0, num_refs - 1, size=int(pick_BxC.sum()))
  out[pick_BxC] = (out[pick_BxC] + shift) % num_refs
  return out
