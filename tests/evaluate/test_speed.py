"""The cold throughput condition: unique ids per retrieval and the row cache off."""

import numpy as np
import pytest

from m3jax.evaluate import speed
from m3jax.task import ChunkQuery
from m3jax.memory.lru import LRUCache


def test_unique_ids_replaces_repeats_and_empty_slots():
  ids = np.array([["a", "b"], ["a", None], ["b", "c"]], dtype=object)
  got = speed.unique_ids(ids, ["a", "b", "c", "d", "e", "f"])
  flat = got.reshape(-1).tolist()
  assert len(set(flat)) == 6 and None not in flat
  assert got[0].tolist() == ["a", "b"] and got[2, 1] == "c"  # first uses are kept
  assert ids[1, 1] is None  # input untouched
  with pytest.raises(ValueError, match="pool of 3 ids is too small"):
    speed.unique_ids(ids, ["a", "b", "c"])


class _Feeder:
  def __init__(self):
    self.assembled = []

  def assemble(self, ids):
    self.assembled.append(ids)
    return "memory"


class _Source:
  """Every query retrieves the same two ids: a warm cache would serve all but two."""

  def __init__(self):
    self.feeder = _Feeder()

  def retrieve_ids(self, queries):
    return np.array([["r0", "r1"]] * len(queries), dtype=object)


def test_cold_memory_reads_distinct_rows():
  source = _Source()
  cold = speed.ColdMemory(source, [f"r{i}" for i in range(10)])
  mem, ids = cold([ChunkQuery(i, 0, np.array([1, 2])) for i in range(4)])
  assert mem == "memory" and len(set(ids.reshape(-1))) == 8
  assert source.feeder.assembled[0].shape == (4, 1, 2)


def test_cache_off_restores_the_cache():
  class Bank:
    cache = LRUCache(7)

  bank = Bank()
  saved = bank.cache
  with speed.cache_off(bank):
    assert bank.cache.size == 0
    bank.cache.put("x", 1)
    assert bank.cache.get("x") is None
  assert bank.cache is saved


def test_run_interleaved_warms_up_untimed_and_alternates_the_order():
  calls = []

  def condition(name):
    def run():
      calls.append(name)
      return {"tokens_per_s": float(len(calls))}

    return run

  rows = speed.run_interleaved({n: condition(n) for n in "abc"}, runs=3, progress=False)
  # one warm-up round, then rounds in order, reversed, in order
  assert calls == list("abc") + list("abc") + list("cba") + list("abc")
  assert [r["tokens_per_s"] for r in rows["a"]] == [4.0, 9.0, 10.0]  # warm-up not kept
  assert [r["tokens_per_s"] for r in rows["c"]] == [6.0, 7.0, 12.0]


def test_paired_ratio_is_the_median_of_per_round_ratios():
  a = [{"tokens_per_s": x} for x in (2.0, 4.0, 6.0, 10.0)]
  b = [{"tokens_per_s": x} for x in (1.0, 1.0, 3.0, 2.0)]
  got = speed.paired_ratio(a, b)
  # per round: 2, 4, 2, 5; a ratio of medians would be 5 / 2 = 2.5, not 3
  assert got["values"] == [2.0, 4.0, 2.0, 5.0]
  assert got["median"] == 3.0 and got["min"] == 2.0 and got["max"] == 5.0 and got["n"] == 4
  with pytest.raises(ValueError, match="equal"):
    speed.paired_ratio(a, b[:3])


def test_median_row_takes_each_field_median():
  rows = [{"tokens_per_s": t, "ttft_s": f} for t, f in ((1.0, 0.3), (5.0, 0.1), (3.0, 0.2))]
  got = speed.median_row(rows)
  assert got["tokens_per_s"] == 3.0 and got["ttft_s"] == 0.2
  assert got["tokens_per_s_runs"] == [1.0, 5.0, 3.0]
