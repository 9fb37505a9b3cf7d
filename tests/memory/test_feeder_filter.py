"""What the production anti-copy path drops: MemoryFeeder + anti_copy_filter, hand cases.

The evaluation rule divides by the QUESTION: a reference that quotes the question goes,
a short fact that merely shares words with it stays. The opposite normalization (by the
reference, the old ``feeder.overlap_filter``) gets both wrong; these cases pin that.
"""

import numpy as np

from m3jax.memory.feeder import MemoryFeeder, anti_copy_filter

Q = list(range(100, 109))  # a 9-token question

REFS = {
  "quotes_question": [1, 2] + Q + [3, 4, 5, 6, 7, 8] * 4,  # contains all of it: 9/9
  "short_fact": [103, 104],  # inside the question, but only 2/9 of it
  "two_thirds": Q[:6] + [50] * 10,  # 6/9 = threshold: kept (strictly greater drops)
  "seven_ninths": Q[:7] + [51] * 3,  # 7/9 > 2/3: dropped
  "scattered": [100, 60, 101, 61, 102, 62, 103, 63, 104, 64, 105, 65, 106],  # 7/9 in span
  "unrelated": [7, 8, 9, 10],
}


class _Embedder:
  def embed(self, texts):
    return np.zeros((len(texts), 1), np.float32)


class _Retriever:
  """Returns every reference, in REFS order, whatever the query."""

  def search(self, emb, k):
    return [list(REFS)[:k] for _ in range(len(emb))], None


class _Bank(set):
  layout = None

  def contains(self, ids):
    return [i in self for i in ids]

  @staticmethod
  def dequantize(k, v):
    return k, v


def _kept(threshold=2 / 3, r=None):
  r = len(REFS) if r is None else r
  feeder = MemoryFeeder(
    _Embedder(), _Retriever(), _Bank(REFS), r, keep=anti_copy_filter(REFS.__getitem__, threshold)
  )
  ids = feeder.retrieve(["q"], [Q])[0]
  feeder.close()
  return [i for i in ids if i is not None]


def test_eval_filter_drops_what_contains_the_question():
  assert _kept() == ["short_fact", "two_thirds", "unrelated"]


def test_threshold_is_configurable():
  assert _kept(threshold=0.8) == [
    "short_fact",
    "two_thirds",
    "seven_ninths",
    "scattered",
    "unrelated",
  ]
  assert _kept(threshold=1.0) == list(REFS)


def test_dropped_slots_are_refilled_from_the_oversampled_list():
  # R = 2: the two best survivors fill the row, the dropped ones never appear.
  assert _kept(r=2) == ["short_fact", "two_thirds"]
