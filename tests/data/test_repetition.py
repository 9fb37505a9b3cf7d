"""In-context repetition rows: a row becomes a tiled span of itself, seeded and resumable."""

import numpy as np
import pytest

from m3jax.data import repetition
from m3jax.data.pipeline import TrainIterator

BOS = 1


def _batch(b=6, t=40, seed=0):
  targets = np.random.default_rng(seed).integers(5, 500, size=(b, t)).astype(np.int32)
  inputs = np.concatenate([np.full((b, 1), BOS, np.int32), targets[:, :-1]], 1)
  return dict(inputs=inputs, targets=targets, loss_mask=np.ones((b, t), np.float32))


def _period_and_start(row, original):
  """The smallest p with row[i] == row[i - p] for all i >= p, and where row[:p] sits in
  ``original`` (brute force, independent of repeat_rows)."""
  t = len(row)
  for p in range(1, t + 1):
    if all(row[i] == row[i - p] for i in range(p, t)):
      starts = [s for s in range(t - p + 1) if list(original[s : s + p]) == list(row[:p])]
      return p, starts
  raise AssertionError("unreachable")


def test_rate_one_tiles_a_span_of_each_row_and_keeps_the_batch_contract():
  batch = _batch()
  out = repetition.repeat_rows(batch, 1.0, np.random.default_rng(3), BOS, 4, 12)
  for i in range(6):
    period, starts = _period_and_start(out["targets"][i], batch["targets"][i])
    assert 4 <= period <= 12, period  # random tokens: the tiled span is the period
    assert starts, "the span is not a contiguous piece of the original row"
  np.testing.assert_array_equal(out["inputs"][:, 0], BOS)
  np.testing.assert_array_equal(out["inputs"][:, 1:], out["targets"][:, :-1])
  np.testing.assert_array_equal(out["loss_mask"], batch["loss_mask"])
  assert not np.array_equal(out["targets"], batch["targets"])
  # the caller's arrays are untouched
  np.testing.assert_array_equal(batch["targets"], _batch()["targets"])


def test_rate_zero_is_identity_and_rate_is_the_expected_fraction():
  batch = _batch(b=400)
  same = repetition.repeat_rows(batch, 0.0, np.random.default_rng(0), BOS, 4, 12)
  np.testing.assert_array_equal(same["targets"], batch["targets"])
  out = repetition.repeat_rows(batch, 0.25, np.random.default_rng(0), BOS, 4, 12)
  changed = (out["targets"] != batch["targets"]).any(1).mean()
  assert 0.18 < changed < 0.32, changed  # binomial(400, 0.25): 4 sigma is +-0.087


def test_bad_arguments_are_errors():
  with pytest.raises(ValueError, match="rate"):
    repetition.repeat_rows(_batch(), 1.5, np.random.default_rng(0), BOS, 4, 12)
  with pytest.raises(ValueError, match="min_span"):
    repetition.repeat_rows(_batch(), 0.5, np.random.default_rng(0), BOS, 9, 3)


def test_iterator_repeats_the_same_rows_after_resume():
  stream = np.random.default_rng(1).integers(5, 500, size=64 * 40).astype(np.int32)

  def make():
    return TrainIterator(stream, 32, 4, seed=0, bos_id=BOS, repeat_rate=0.5, repeat_spans=(4, 8))

  it = make()
  batches = [next(it) for _ in range(5)]
  resumed = make()
  resumed.restore({"epoch": 0, "step": 3})
  for want in batches[3:]:
    got = next(resumed)
    np.testing.assert_array_equal(got["targets"], want["targets"])
    np.testing.assert_array_equal(got["inputs"], want["inputs"])
  plain = TrainIterator(stream, 32, 4, seed=0, bos_id=BOS)
  differs = [not np.array_equal(next(plain)["targets"], b["targets"]) for b in batches]
  assert any(differs), "repeat_rate=0.5 changed no row in 5 batches of 4"


def test_a_repeated_row_counts_every_target_once():
  batch = _batch()
  batch["loss_mask"][:, ::3] = 4.0  # e.g. swapped tokens' weights, at the old row's positions
  out = repetition.repeat_rows(batch, 1.0, np.random.default_rng(3), BOS, 4, 12)
  np.testing.assert_array_equal(out["loss_mask"], np.ones_like(out["loss_mask"]))
  assert (batch["loss_mask"][:, ::3] == 4.0).all()  # the caller's batch is not mutated
