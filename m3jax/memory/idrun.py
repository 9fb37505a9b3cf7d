"""A bank's sorted id-hash run on disk: ``rowindex/g<G>/`` under the bank's kvstore.

``rowindex`` holds the logic (hashing, merging, lookups); this module holds the files of
one generation of the run, which ``MemoryBank`` rewrites whole when it merges its tail and
commits by naming the generation in the manifest. Format 3 keeps whole chunks of (hash,
row) pairs, ``pairs`` [C, FENCE, 2]; format 2 keeps ``hash`` and ``rows`` [S]. Both keep
``fences``, the first hash of every chunk.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorstore as ts

from m3jax.memory import bankfiles, rowindex


def run_dir(gen: int) -> str:
  return f"rowindex/g{gen}"


def array_names(packed: bool) -> tuple[str, ...]:
  """The run's data arrays (``fences`` besides)."""
  return ("pairs",) if packed else ("hash", "rows")


def open_run(open_array: Callable, gen: int, packed: bool) -> dict:
  """{name: TensorStore array} of generation ``gen``; ``open_array(path)`` opens a bank
  array by its path under the kvstore."""
  return {n: open_array(f"{run_dir(gen)}/{n}") for n in array_names(packed) + ("fences",)}


def read_chunks(run: dict, chunks_C: np.ndarray, s: int, packed: bool):
  """(hash, rows) of the run's chunks ``chunks_C`` (``s`` entries in all), concatenated
  (still sorted)."""
  if packed:  # one index-array read of whole chunks
    return rowindex.pairs_view(run["pairs"][chunks_C].read().result())
  # Format 2: one slice read per chunk, all in flight at once (an index-array read of
  # every position costs several times more in TensorStore).
  starts = (chunks_C * rowindex.FENCE).tolist()
  futures = {
    name: [run[name][a : min(a + rowindex.FENCE, s)].read() for a in starts]
    for name in ("hash", "rows")
  }
  return tuple(np.concatenate([f.result() for f in futures[n]]) for n in ("hash", "rows"))


def read_whole(read: Callable, open_array: Callable, gen: int, s: int, packed: bool):
  """(hash, rows) of the whole run of generation ``gen`` (``s`` entries); ``read(name,
  array, index)`` is the bank's checked read (damage is an error naming the array)."""
  if not s:
    return np.zeros(0, np.uint64), np.zeros(0, np.int64)
  if packed:
    pairs = read("rowindex pairs", open_array(f"{run_dir(gen)}/pairs"), slice(None))
    return rowindex.from_pairs(pairs)
  return tuple(
    read(f"rowindex {n}", open_array(f"{run_dir(gen)}/{n}"), slice(0, s)) for n in ("hash", "rows")
  )


def write(spec: dict, context: ts.Context, gen: int, h, r, fences, packed: bool) -> None:
  """Writes generation ``gen``: sorted hashes ``h``, their rows ``r`` and ``fences``."""
  arrays: list[tuple] = [("fences", fences, (), ts.uint64, 1 << 16)]
  if packed:
    arrays.append(("pairs", rowindex.to_pairs(h, r), (rowindex.FENCE, 2), ts.uint64, 1))
  else:
    arrays += [
      ("hash", h, (), ts.uint64, rowindex.FENCE),
      ("rows", r, (), ts.int64, rowindex.FENCE),
    ]
  for name, data, row, dt, chunk in arrays:
    path = bankfiles.subpath(spec, f"{run_dir(gen)}/{name}")
    bankfiles.create_array(path, row, dt, False, chunk, 0, context, shape0=len(data)).write(
      data
    ).result()
