"""What one bank row is: the per-reference memory shape, the row record, the stored id.

A row holds one reference's memories, keys and values [L_mem, K, M, D] (bfloat16, or
uint8 product-quantization codes [L_mem, K, M, S]), the selected tokens' mask [M] and
positions [L_mem, K, M], and its id as ``ID_BYTES`` zero-padded UTF-8 bytes. The bank
(``m3jax.memory.store``) stores rows packed into one record each (``rowrecord``), or, in
format 2, as one array per field (``ROW_ARRAYS`` and ``ids``).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import tensorstore as ts

from m3jax.memory import rowrecord

ID_BYTES = 64
ROW_ARRAYS = ("keys", "values", "mask", "token_idx")


@dataclasses.dataclass(frozen=True)
class BankLayout:
  """Per-reference memory shape; ``pq_subspaces == 0`` means unquantized bfloat16."""

  num_layers: int
  kv_heads: int
  tokens: int
  head_dim: int
  pq_subspaces: int = 0

  @classmethod
  def from_model(cls, cfg, pq_subspaces: int = 0) -> "BankLayout":
    return cls(
      cfg.memory.num_memory_layers,
      cfg.num_kv_heads,
      cfg.memory.tokens_per_head,
      cfg.head_dim,
      pq_subspaces,
    )

  @property
  def row_shape(self) -> tuple[int, ...]:
    last = self.pq_subspaces or self.head_dim
    return (self.num_layers, self.kv_heads, self.tokens, last)


@dataclasses.dataclass
class BankRows:
  """Rows as stored: keys/values bf16 [n, L, K, M, D] or uint8 codes [n, L, K, M, S]."""

  keys: np.ndarray
  values: np.ndarray
  mask: np.ndarray
  token_idx: np.ndarray


def encode_ids(ids: Sequence[str]) -> np.ndarray:
  out = np.zeros((len(ids), ID_BYTES), np.uint8)
  for j, i in enumerate(ids):
    b = i.encode("utf-8")
    if len(b) > ID_BYTES or not b or b"\0" in b:
      raise ValueError(
        f"reference id {i!r} must be 1..{ID_BYTES} UTF-8 bytes without NUL; shorten it"
      )
    out[j, : len(b)] = np.frombuffer(b, np.uint8)
  return out


def decode_ids(rows_NxB: np.ndarray) -> list[str]:
  return [bytes(r).rstrip(b"\0").decode("utf-8") for r in np.asarray(rows_NxB, np.uint8)]


def record_layout(layout: BankLayout) -> rowrecord.RecordLayout:
  import ml_dtypes

  kv = np.uint8 if layout.pq_subspaces else ml_dtypes.bfloat16
  return rowrecord.RecordLayout.of(layout.row_shape, kv, layout.tokens, ID_BYTES)


def row_arrays(layout: BankLayout, packed: bool) -> dict:
  """name -> (row shape, TensorStore dtype) of the per-row arrays of either format."""
  if packed:
    return {
      "rows": ((record_layout(layout).record_bytes,), ts.uint8),
      "ids": ((ID_BYTES,), ts.uint8),
    }
  n = layout.row_shape
  dtype = ts.uint8 if layout.pq_subspaces else ts.bfloat16
  return {
    "keys": (n, dtype),
    "values": (n, dtype),
    "mask": ((layout.tokens,), ts.bool),
    "token_idx": (n[:-1], ts.int32),
    "ids": ((ID_BYTES,), ts.uint8),
  }
