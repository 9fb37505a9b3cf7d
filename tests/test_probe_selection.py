"""experiments/probe_selection.py: locating an answer in its reference, and the shares of
(layer, head) pairs that kept it, on hand-built memories."""

import numpy as np

from experiments import probe_selection as probe


class _Vocab:
  """Words as ids; a leading space marks a word start (id + 100), like SentencePiece."""

  def encode(self, text):
    words = text.split(" ")
    out = []
    for j, w in enumerate(words):
      if w:
        out.append(int(w) + (100 if j > 0 else 0))
    return out


def test_answer_positions_prefers_the_word_start_form():
  ref = [1, 105, 7, 106, 5]
  assert probe.answer_positions(_Vocab(), ref, "6") == [3]  # " 6" -> 106
  assert probe.answer_positions(_Vocab(), ref, "7") == [2]  # only as it is
  assert probe.answer_positions(_Vocab(), ref, "9") == []
  assert probe.find([1, 2, 3, 2, 3], [2, 3]) == 1 and probe.find([1], [1, 2]) == -1


def test_survival_counts_heads_that_kept_first_and_all_pieces():
  # 2 layers x 2 heads, 3 memory slots; the last slot is padding (invalid).
  token_idx = np.array([[[4, 5, 4], [0, 1, 5]], [[5, 9, 4], [2, 3, 4]]])
  valid = np.array([True, True, False])
  first, every, per_head = probe.survival(token_idx, valid, [4, 5])
  # kept sets: {4,5}, {0,1}, {5,9}, {2,3}: first piece 4 in 1 of 4; both in 1 of 4
  assert (first, every, per_head) == (0.25, 0.25, 2.0)
  first, every, _ = probe.survival(token_idx, valid, [5])
  assert (first, every) == (0.5, 0.5)  # head (0, 1)'s padding slot holds 5: not kept


def test_summarize_means_each_group():
  rows = {"b": [(1.0, 0.5, 0.25, 2), (0.0, 0.0, 0.75, 1)], "a": [(0.5, 0.5, 0.5, 1)]}
  got = probe.summarize(rows)
  assert list(got) == ["a", "b"]
  assert got["b"] == {
    "n": 2,
    "first_token_kept": 0.5,
    "all_pieces_kept": 0.25,
    "chance_per_token": 0.5,
    "mean_pieces": 1.5,
  }
