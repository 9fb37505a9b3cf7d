"""In-context repetition rows: a general copy signal for worlds whose text never repeats.

Reading a value out of memory is a copy: attend to a token, write that token's identity
to the output. A model learns such a copy circuit (the "induction head") from text in
which spans recur. Natural text is full of them; an invented world's training text is
not: its values are each written once per document, and only entity names recur. On the
demo world a model trained for 800 steps copies nothing in context (the second pass of a
repeated list of common words is *less* likely than the first; docs/design.md), and it
reads from memory only the names.

``repeat_rows`` replaces, with probability ``rate``, a training row by a span of itself
tiled to the row's length, a span of ``min_span..max_span`` tokens at a random place in
the row. The first pass is ordinary text; every later token is predictable only by
copying from ``ℓ`` tokens back, and ``ℓ`` varies from row to row, so a fixed-offset head
does not solve it: a content match (the induction head) does. The references of a
replaced row are left as they are: its text is a span of the original row, retrieved for
that text. Everything is drawn from the ``rng`` the caller seeds by stream position, so a
resumed run repeats exactly the same rows.
"""

from __future__ import annotations

import numpy as np

from m3jax.data import shift


def repeat_rows(
  batch: dict, rate: float, rng: np.random.Generator, bos_id: int, min_span: int, max_span: int
) -> dict:
  """The batch with about ``rate`` of its rows replaced by a tiled span of themselves."""
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f"repetition rate={rate} must be in [0, 1]")
  targets_BxT = batch["targets"]
  b, t = targets_BxT.shape
  if not 1 <= min_span <= max_span:
    raise ValueError(f"repetition spans need 1 <= min_span={min_span} <= max_span={max_span}")
  chosen_B = rng.random(b) < rate
  spans_B = rng.integers(min_span, max_span + 1, size=b)
  if not chosen_B.any():
    return batch
  targets_BxT = targets_BxT.copy()
  for i in np.flatnonzero(chosen_B):
    span = int(min(spans_B[i], t))
    start = int(rng.integers(0, t - span + 1))
    targets_BxT[i] = np.resize(targets_BxT[i, start : start + span], t)
  # A replaced row is a new row: every target counts once (the old row's weights, e.g.
  # on swapped tokens, belonged to other positions).
  mask_BxT = batch["loss_mask"].copy()
  mask_BxT[chosen_B] = 1.0
  return shift.with_targets(batch, targets_BxT, bos_id, loss_mask=mask_BxT)
