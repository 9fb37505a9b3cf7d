"""experiments/probe_copy.py: tiled rows repeat a span of the stream; pass means split at
the span, checked on hand-built arrays."""

import numpy as np

from experiments import probe_copy as probe


def test_tiled_rows_repeat_a_contiguous_span():
  stream = np.arange(100, 200)
  rows = probe.tiled_rows(stream, 7, 5, 30, np.random.default_rng(0))
  assert rows.shape == (5, 30)
  for row in rows:
    start = row[0] - 100
    np.testing.assert_array_equal(row[:7], stream[start : start + 7])
    np.testing.assert_array_equal(row[7:], row[:-7])  # period 7


def test_pass_means_split_first_second_and_later_passes():
  nll = np.array([[5.0, 5.0, 3.0, 1.0, 0.0, 0.0, 0.0], [3.0, 3.0, 1.0, 3.0, 2.0, 2.0, 2.0]])
  got = probe.pass_means(nll, 2)
  assert got["first_pass"] == (5 + 5 + 3 + 3) / 4
  assert got["second_pass"] == (3 + 1 + 1 + 3) / 4
  assert got["later_passes"] == (0 + 0 + 0 + 2 + 2 + 2) / 6
