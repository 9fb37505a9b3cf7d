"""Eq. (6) overlap: exact against brute force, hand cases, the 2|r| span limit, filters."""

import itertools

import numpy as np
import pytest

from m3jax.memory import overlap as ov


def brute_overlap(t, r, factor=2):
  """Literal Eq. (6): try every pair of index tuples, largest N first."""
  t, r = list(t), list(r)
  if not r:
    return 0.0
  for n in range(min(len(t), len(r)), 0, -1):
    for js in itertools.combinations(range(len(r)), n):
      for is_ in itertools.combinations(range(len(t)), n):
        if is_[-1] - is_[0] <= factor * len(r) and all(t[i] == r[j] for i, j in zip(is_, js)):
          return n / len(r)
  return 0.0


def test_hand_cases():
  assert ov.overlap([1, 2, 3], [1, 2, 3]) == 1.0
  assert ov.overlap([9, 1, 9, 2, 9, 3], [1, 2, 3]) == 1.0
  assert ov.overlap([3, 2, 1], [1, 2, 3]) == pytest.approx(1 / 3)
  assert ov.overlap([5, 6], [1, 2]) == 0.0
  assert ov.overlap([1, 2], [1, 2, 3, 4]) == 0.5
  assert ov.overlap([], [1]) == 0.0 and ov.overlap([1], []) == 0.0


def test_span_limit():
  # r = [1, 2]: span limit 4. Matched positions 0 and 4 are allowed, 0 and 5 are not.
  assert ov.overlap([1, 0, 0, 0, 2], [1, 2]) == 1.0
  assert ov.overlap([1, 0, 0, 0, 0, 2], [1, 2]) == 0.5
  assert ov.overlap([1, 0, 0, 0, 0, 2], [1, 2], max_span_factor=3) == 1.0
  # The best window is not the first one.
  assert ov.overlap([1, 0, 0, 0, 0, 0, 1, 2], [1, 2]) == 1.0


@pytest.mark.parametrize("seed", range(40))
def test_matches_brute_force(seed):
  rng = np.random.default_rng(seed)
  r = rng.integers(0, 4, rng.integers(1, 4))
  t = rng.integers(0, 4, rng.integers(0, 11))
  assert ov.overlap(t, r) == pytest.approx(brute_overlap(t, r))


def test_windowed_dp_long_multiword():
  """Against a plain windowed DP for references longer than one 64-bit word."""
  rng = np.random.default_rng(0)

  def lcs(a, b):
    """Textbook DP, one row at a time: row[j] = max(row[j-1], up[j], up[j-1] + match)."""
    row = np.zeros(len(b) + 1, int)
    for x in a:
      cand = row.copy()
      cand[1:] = np.maximum(row[1:], row[:-1] + (b == x))
      row = np.maximum.accumulate(cand)
    return row[-1]

  for m in (63, 64, 65, 130):
    r = rng.integers(0, 6, m)
    t = rng.integers(0, 6, 3 * m)
    want = max(lcs(t[s : s + 2 * m + 1], r) for s in range(len(t))) / m
    got = ov.overlap_many(t, [r, r[: m // 2]])
    assert got[0] == pytest.approx(want)
    assert got[1] == pytest.approx(ov.overlap(t, r[: m // 2]))


def test_overlap_many_equals_single():
  rng = np.random.default_rng(1)
  t = rng.integers(0, 20, 200)
  refs = [rng.integers(0, 20, n) for n in (0, 3, 17, 40, 70)]
  np.testing.assert_allclose(ov.overlap_many(t, refs), [ov.overlap(t, r) for r in refs])


def test_filters():
  seq = list(range(100))
  assert ov.leaks(seq, list(range(10, 20)))
  assert not ov.leaks(seq, list(range(95, 105)))  # 5/10 = 0.5
  q = [7, 8, 9]
  keep = ov.anti_copy_keep(q, [[1, 7, 8, 9, 2, 3, 4, 5], [7, 1, 2, 3], [9, 8, 7]])
  assert keep.tolist() == [False, True, True]


def test_speed_paper_size():
  import time

  rng = np.random.default_rng(0)
  t = rng.integers(0, 500, 2048)
  r = rng.integers(0, 500, 128)
  start = time.perf_counter()
  ov.overlap(t, r)
  assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("seed", range(20))
def test_divides_by_the_second_argument(seed):
  """Both argument orders against brute force: the value is over the SECOND's length."""
  rng = np.random.default_rng(100 + seed)
  a = rng.integers(0, 3, rng.integers(1, 8))
  b = rng.integers(0, 3, rng.integers(1, 4))
  assert ov.overlap(a, b) == pytest.approx(brute_overlap(a, b))
  assert ov.overlap(b, a) == pytest.approx(brute_overlap(b, a))
  assert ov.overlap([5, 6], [5, 6, 7, 8]) == 0.5 and ov.overlap([5, 6, 7, 8], [5, 6]) == 1.0


def test_training_filter_drops_what_its_rule_says():
  """leaks(sequence, reference): overlap normalized by the reference, > 0.9 drops."""
  seq = list(range(100, 200))
  assert ov.leaks(seq, seq[40:50])  # copied verbatim: 10/10
  assert not ov.leaks(seq, seq[40:49] + [7])  # 9/10 = 0.9: kept
  assert ov.leaks(seq, seq[40:59] + [7])  # 19/20 = 0.95: dropped
  assert not ov.leaks(seq, seq[0:30:3])  # spread over 28 > 2·10 tokens
  assert not ov.leaks(seq[:20], list(range(100, 200)))  # holds the sequence: 20/100
  assert ov.leaks(seq, seq[40:49] + [7], threshold=0.85)
