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
  return np.array(
    [
      int.from_bytes(hashlib.blake2b(i.encode("utf-8"), digest_size=8).digest(), "little")
      for i in ids
    ],
    np.uint64,
  )


class RowIndex:
  """In-memory view: fences of the sorted run, and the tail as {hash: [rows]}."""

  def __init__(
    self,
    read_chunk,
    fences_C: np.ndarray,
    sorted_count: int,
    tail_hashes_N: np.ndarray,
    tail_start: int,
  ):
    """``read_chunk(sorted chunk indices) -> (hashes, rows)`` reads those sorted-run chunks,
    concatenated."""
    self._read_chunk = read_chunk
    self.fences = np.asarray(fences_C, np.uint64)
    self.sorted_count = int(sorted_count)
    self.tail: dict[int, list[int]] = {}
    self.add(tail_hashes_N, tail_start)

  @property
  def tail_len(self) -> int:
    return sum(len(v) for v in self.tail.values())

  def add(self, hashes_N: np.ndarray, start: int) -> None:
    for j, h in enumerate(np.asarray(hashes_N, np.uint64).tolist()):
      self.tail.setdefault(h, []).append(start + j)

  def candidates(self, hashes_Q: np.ndarray) -> list[list[int]]:
    """Every row (deleted or not) whose id hash equals each query hash (``read_chunk`` may
    return padding entries, row -1: they are skipped).

    Reads the sorted-run chunk of every query (plus the chunk before when the hash equals
    a fence, where equal hashes may straddle two chunks) in one read, then one vectorized
    search."""
    hashes = np.asarray(hashes_Q, np.uint64)
    out = [list(self.tail.get(h, ())) for h in hashes.tolist()]
    if not self.sorted_count or not len(hashes):
      return out
    chunk_of = np.searchsorted(self.fences, hashes, side="right") - 1
    on_fence = (chunk_of >= 1) & (self.fences[np.maximum(chunk_of, 0)] == hashes)
    need = np.unique(np.concatenate([chunk_of[chunk_of >= 0], chunk_of[on_fence] - 1]))
    if not len(need):
      return out
    run_h, run_r = self._read_chunk(need)  # the chunks, concatenated: still sorted
    lo = np.searchsorted(run_h, hashes, "left")
    hi = np.searchsorted(run_h, hashes, "right")
    for q in np.flatnonzero(hi > lo):
      out[q].extend(r for r in run_r[lo[q] : hi[q]].tolist() if r >= 0)  # -1: padding
    return out


def merged_run(
  sorted_hash_N: np.ndarray, sorted_rows_N: np.ndarray, tail_hash_Nt: np.ndarray, tail_start: int
):
  """-> (hash, rows, fences) of the run holding both (stable: equal hashes by row)."""
  h = np.concatenate([sorted_hash_N, tail_hash_Nt]).astype(np.uint64)
  r = np.concatenate([sorted_rows_N, np.arange(tail_start, tail_start + len(tail_hash_Nt))])
  order = np.lexsort((r, h))
  h, r = h[order], r[order].astype(np.int64)
  return h, r, h[::FENCE].copy()


PAD = np.uint64(2**64 - 1)  # row of a padding entry (no row is 2^64 - 1)


def to_pairs(hash_N: np.ndarray, rows_N: np.ndarray) -> np.ndarray:
  """The run as uint64 [C, FENCE, 2] (hash, row), the last chunk padded with PAD rows:
  a batch of lookups then reads its C chunks in one index-array read (format 3)."""
  n = len(hash_N)
  c = -(-n // FENCE)
  out = np.full((c * FENCE, 2), PAD, np.uint64)
  out[:n, 0] = hash_N
  out[:n, 1] = np.asarray(rows_N, np.int64).astype(np.uint64)
  return out.reshape(c, FENCE, 2)


def from_pairs(pairs_CxFx2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """-> (hash uint64, rows int64) of the real entries, still sorted."""
  h, r = pairs_view(pairs_CxFx2)
  keep = r >= 0
  return h[keep], r[keep]


def pairs_view(pairs_CxFx2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """-> (hash uint64, rows int64) of consecutive run chunks, padding included (hash PAD,
  row -1): still sorted, since only the run's last chunk is padded and PAD is the largest
  hash. The lookup path: no filtering copy of every entry read."""
  pairs = np.asarray(pairs_CxFx2, np.uint64)
  return pairs[..., 0].reshape(-1), pairs[..., 1].reshape(-1).view(np.int64)
