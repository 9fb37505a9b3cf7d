"""A small LRU cache of bank rows (paper §3.1: adjacent chunks often retrieve the same
references), with hit/miss counters so the benefit is measurable. ``size == 0`` disables it."""

from __future__ import annotations

import collections
import threading


class LRUCache:
  """Thread-safe (the feeder's prefetch thread reads the bank) bounded mapping."""

  def __init__(self, size: int = 1024):
    if size < 0:
      raise ValueError(f"LRU cache size must be >= 0, got {size}")
    self.size = size
    self.hits = 0
    self.misses = 0
    self._data: collections.OrderedDict = collections.OrderedDict()
    self._lock = threading.Lock()

  @property
  def hit_rate(self) -> float:
    total = self.hits + self.misses
    return self.hits / total if total else 0.0

  def get(self, key):
    """The cached value or None (counts a hit or a miss)."""
    with self._lock:
      if key in self._data:
        self._data.move_to_end(key)
        self.hits += 1
        return self._data[key]
      self.misses += 1
      return None

  def put(self, key, value) -> None:
    if self.size == 0:
      return
    with self._lock:
      self._data[key] = value
      self._data.move_to_end(key)
      while len(self._data) > self.size:
        self._data.popitem(last=False)

  def pop(self, key) -> None:
    with self._lock:
      self._data.pop(key, None)

  def clear(self) -> None:
    with self._lock:
      self._data.clear()

  def __len__(self) -> int:
    return len(self._data)

  def stats(self) -> dict:
    return {
      "size": self.size,
      "entries": len(self),
      "hits": self.hits,
      "misses": self.misses,
      "hit_rate": self.hit_rate,
    }
