"""Reference id -> bank row, for 10^8 rows, without loading every id into Python.

Every row's id is hashed to a uint64 (``id_hash`` array, appended with the row). Rows
``[0, S)`` are also in a sorted run: ``hash`` (sorted) and ``rows`` (their rows), chunked
by ``FENCE`` entries, and ``fences`` (the first hash of every chunk). Opening reads only
the fences (S / 1024 values) and the unsorted tail ``[S, count)``; a lookup of a batch
reads the one sorted chunk each id falls into. Rows deleted are never returned; a hash
collision is resolved by comparing the stored id bytes (``MemoryBank`` does it).
A run is rewritten whole (a new generation directory, committed by the manifest) when the
tail outgrows it: amortized O(batch) per append.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

FENCE = 1024


def hash_ids(ids: Sequence[str]) -> np.ndarray:
  """uint64 [n]: the first 8 bytes of blake2b of each id's UTF-8."""
  return np.array([int.from_bytes(hashlib.blake2b(i.encode("utf-8"), digest_size=8).digest(),
                                  "little") for i in ids], np.uint64)


class RowIndex:
  """In-memory view: fences of the sorted run, and the tail as {hash: [rows]}."""

  def __init__(self, read_chunk, fences: np.ndarray, sorted_count: int,
               tail_hashes: np.ndarray, tail_start: int):
    """``read_chunk(chunk_indices) -> [(hashes, rows)]`` reads sorted-run chunks."""
    self._read_chunk = read_chunk
    self.fences = np.asarray(fences, np.uint64)
    self.sorted_count = int(sorted_count)
    self.tail: dict[int, list[int]] = {}
    self.add(tail_hashes, tail_start)

  @property
  def tail_len(self) -> int:
    return sum(len(v) for v in self.tail.values())

  def add(self, hashes: np.ndarray, start: int) -> None:
    for j, h in enumerate(np.asarray(hashes, np.uint64).tolist()):
      self.tail.setdefault(h, []).append(start + j)

  def candidates(self, hashes: np.ndarray) -> list[list[int]]:
    """Every row (deleted or not) whose id hash equals each query hash."""
    hashes = np.asarray(hashes, np.uint64)
    out = [list(self.tail.get(h, ())) for h in hashes.tolist()]
    if self.sorted_count and len(hashes):
      chunk_of = np.searchsorted(self.fences, hashes, side="right") - 1
      # equal hashes may straddle a fence: also look into the chunk before
      need = sorted({int(c) for c in chunk_of if c >= 0} |
                    {int(c) - 1 for c in chunk_of if c >= 1})
      got = dict(zip(need, self._read_chunk(need)))
      for q, (h, c) in enumerate(zip(hashes, chunk_of)):
        for cc in (c - 1, c):
          if cc < 0:
            continue
          hs, rs = got[int(cc)]
          lo, hi = np.searchsorted(hs, h, "left"), np.searchsorted(hs, h, "right")
          out[q].extend(int(r) for r in rs[lo:hi])
    return out


def merged_run(sorted_hash: np.ndarray, sorted_rows: np.ndarray, tail_hash: np.ndarray,
               tail_start: int):
  """-> (hash, rows, fences) of the run holding both (stable: equal hashes by row)."""
  h = np.concatenate([sorted_hash, tail_hash]).astype(np.uint64)
  r = np.concatenate([sorted_rows, np.arange(tail_start, tail_start + len(tail_hash))])
  order = np.lexsort((r, h))
  h, r = h[order], r[order].astype(np.int64)
  return h, r, h[::FENCE].copy()
