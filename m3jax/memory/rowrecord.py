"""One bank row as one byte record: keys | values | mask | token_idx | id (bank format 3).

A cold read of n memories touches one chunk (and one shard index) per row instead of one
per row *per array*: TensorStore's cost is per chunk, not per byte, so packing the five
per-row arrays into one ``rows/`` array [N, B] uint8 makes a cold read ~5x fewer chunk
reads, and the id bytes that resolve a hash collision arrive with the memory itself.
Fields are little-endian, in ``FIELDS`` order; ``unpack`` views them back without copies
beyond one per field.
"""

from __future__ import annotations

import dataclasses

import numpy as np

FIELDS = ("keys", "values", "mask", "token_idx", "ids")


@dataclasses.dataclass(frozen=True)
class RecordLayout:
  """Byte offsets of every field of a row record; shapes exclude the row axis."""

  shapes: dict
  dtypes: dict

  @classmethod
  def of(cls, row_shape, kv_dtype, tokens: int, id_bytes: int) -> "RecordLayout":
    shapes = {
      "keys": tuple(row_shape),
      "values": tuple(row_shape),
      "mask": (tokens,),
      "token_idx": tuple(row_shape[:-1]),
      "ids": (id_bytes,),
    }
    dtypes = {
      "keys": np.dtype(kv_dtype),
      "values": np.dtype(kv_dtype),
      "mask": np.dtype(bool),
      "token_idx": np.dtype("<i4"),
      "ids": np.dtype(np.uint8),
    }
    return cls(shapes, dtypes)

  def nbytes(self, name: str) -> int:
    return int(np.prod(self.shapes[name], dtype=np.int64)) * self.dtypes[name].itemsize

  @property
  def offsets(self) -> dict:
    out, at = {}, 0
    for name in FIELDS:
      out[name] = (at, at + self.nbytes(name))
      at += self.nbytes(name)
    return out

  @property
  def record_bytes(self) -> int:
    return sum(self.nbytes(name) for name in FIELDS)


def pack(fields: dict, layout: RecordLayout) -> np.ndarray:
  """{field: [n, ...]} (already of the stored dtypes) -> uint8 [n, B]."""
  n = len(fields["ids"])
  parts = [
    np.ascontiguousarray(fields[name], layout.dtypes[name]).view(np.uint8).reshape(n, -1)
    for name in FIELDS
  ]
  return np.concatenate(parts, axis=1)


def unpack(records_NxB: np.ndarray, layout: RecordLayout, names=FIELDS) -> dict:
  """uint8 [n, B] -> {field: [n, ...]} for ``names``."""
  n = len(records_NxB)
  out = {}
  for name in names:
    a, b = layout.offsets[name]
    raw = np.ascontiguousarray(records_NxB[:, a:b])
    out[name] = raw.view(layout.dtypes[name]).reshape((n,) + layout.shapes[name])
  return out
