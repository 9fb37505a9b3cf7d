"""Reading a bank's arrays so that damage is an error naming the array and the rows.

A bank's arrays store every chunk, even one equal to the fill value
(``bankfiles._zarr3``), so a missing, truncated or checksum-failing chunk of a committed
row is damage, never zeros. These readers turn TensorStore's error into a
``BankCorruptError`` that says which array and which rows, and what to do about it.
"""

from __future__ import annotations

from typing import NoReturn

import numpy as np

REBUILD = "rebuild the bank with build-memory"


class BankCorruptError(ValueError):
  """A chunk of a committed row is missing, truncated or fails its checksum."""


def short(rows_N) -> str:
  """The first 8 rows, and how many there are when more."""
  rows = list(rows_N)
  return ", ".join(map(str, rows[:8])) + (f" … ({len(rows)} rows)" if len(rows) > 8 else "")


def read_checked(url, name: str, arr, index, rows_N=None) -> np.ndarray:
  """``arr[index]`` as numpy; damage -> BankCorruptError naming ``name`` and ``rows_N``
  (or the index when no rows are given)."""
  try:
    return np.asarray(arr[index].read().result())
  except ValueError as e:
    where = f"rows {short(rows_N)}" if rows_N is not None else f"index {index}"
    raise BankCorruptError(
      f"memory bank {url}: array '{name}' {where} cannot be read ({e}); the bank "
      f"is damaged: {REBUILD}"
    ) from None


def locate_damage(url, name: str, arr, rows_N) -> NoReturn:
  """Re-reads ``rows_N`` of ``arr`` one by one to name exactly the damaged ones, then
  raises (called after a batched read of them failed)."""
  bad, msg = [], ""
  for r in np.asarray(rows_N).tolist():
    try:
      arr[r].read().result()
    except ValueError as e:
      bad.append(r)
      msg = msg or str(e)
  raise BankCorruptError(
    f"memory bank {url}: array '{name}' rows {short(bad)} are damaged ({msg}); {REBUILD}"
  )


def verify_rows(url, name: str, arr, count: int, batch: int) -> None:
  """Reads rows [0, count) of ``arr`` ``batch`` at a time (every checksum); raises on the
  first damage, naming its rows."""
  for s in range(0, count, batch):
    rows = np.arange(s, min(count, s + batch))
    try:
      arr[s : s + len(rows)].read().result()
    except ValueError:
      locate_damage(url, name, arr, rows)
