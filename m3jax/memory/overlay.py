"""A bank seen through in-memory edits: insert and delete without touching the disk.

Evaluation and the demo try runtime insertion on a bank they did not create (a trained
workdir's bank). They edit a ``BankOverlay`` instead: deleted ids are hidden, inserted rows
live in memory, reads of everything else go to the base bank. A killed run leaves the
bank on disk exactly as it was.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from m3jax.memory.layout import ROW_ARRAYS, BankRows


class BankOverlay:
  """Duck-types the parts of ``MemoryBank`` that retrieval, feeding and insertion use."""

  def __init__(self, base):
    self.base = base
    self.layout, self.codebooks, self.url = base.layout, base.codebooks, base.url
    self.cache = base.cache
    self._hidden: set[str] = set()
    self._rows: dict[str, tuple] = {}  # id -> (keys, values, mask, token_idx) stored form
    self._texts: dict[str, str] = {}

  def contains(self, ids: Sequence[str]) -> np.ndarray:
    ids = [str(i) for i in ids]
    ask = [i for i in ids if i not in self._rows and i not in self._hidden]
    base = dict(zip(ask, self.base.contains(ask))) if ask else {}
    return np.array([i in self._rows or bool(base.get(i, False)) for i in ids], bool)

  def __contains__(self, ref_id) -> bool:
    return bool(self.contains([ref_id])[0])

  def __len__(self) -> int:
    return len(self.base) - len(self._hidden) + len(self._rows)

  def append(
    self, ids, keys_NxLxKxMxD, values_NxLxKxMxD, mask_NxM, token_idx_NxLxKxM, texts=None
  ) -> None:
    ids = [str(i) for i in ids]
    clash = [i for i, ok in zip(ids, self.contains(ids)) if ok]
    if clash or len(set(ids)) != len(ids):
      raise ValueError(f"reference ids already in the bank (or repeated): {clash[:5]}")
    k, v = self.base.quantize_rows(keys_NxLxKxMxD, values_NxLxKxMxD)
    for j, i in enumerate(ids):
      mask, token_idx = np.asarray(mask_NxM[j], bool), np.asarray(token_idx_NxLxKxM[j], np.int32)
      self._rows[i] = (k[j], v[j], mask, token_idx)
      self._texts[i] = "" if texts is None else texts[j]

  insert = append

  def delete(self, ids) -> None:
    ids = [str(i) for i in ids]
    missing = [i for i, ok in zip(ids, self.contains(ids)) if not ok]
    if missing or len(set(ids)) != len(ids):
      raise KeyError(
        f"cannot delete ids not in the bank (or repeated): {missing[:5]}; nothing was deleted"
      )
    for i in ids:
      if i in self._rows:
        del self._rows[i], self._texts[i]
      else:
        self._hidden.add(i)

  def read(self, ids: Sequence[str]) -> BankRows:
    ids = [str(i) for i in ids]
    missing = [i for i, ok in zip(ids, self.contains(ids)) if not ok]
    if missing:
      raise KeyError(f"reference ids not in memory bank {self.url} (or deleted): {missing[:5]}")
    from_base = list(dict.fromkeys(i for i in ids if i not in self._rows))
    got = self.base.read(from_base) if from_base else None
    where = {i: j for j, i in enumerate(from_base)}
    parts = []
    for f, name in enumerate(ROW_ARRAYS):
      rows = [self._rows[i][f] if i in self._rows else getattr(got, name)[where[i]] for i in ids]
      parts.append(np.stack(rows) if rows else getattr(self.base.read([]), name))
    return BankRows(*parts)

  def texts(self, ids: Sequence[str]) -> list[str]:
    base = [i for i in ids if i not in self._texts]
    got = dict(zip(base, self.base.texts(base))) if base else {}
    return [self._texts.get(i, got.get(i)) for i in ids]

  def quantize_rows(self, keys_NxLxKxMxD, values_NxLxKxMxD):
    return self.base.quantize_rows(keys_NxLxKxMxD, values_NxLxKxMxD)

  def dequantize(self, keys, values):
    return self.base.dequantize(keys, values)
