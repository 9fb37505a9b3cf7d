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
