"""A bank encoded on demand by given parameters: the current weights' memories, no disk.

Evaluation during training asks how well the model being trained reads memory. Its
memories must be the current parameters' own, as in stage 2: a bank built from an
earlier checkpoint would answer another question, and building one every
``eval_every`` steps would encode and write the whole knowledge base each time.

``LiveBank`` duck-types the part of ``MemoryBank`` a ``MemoryFeeder`` reads
(``contains``, ``read``, ``layout``, ``dequantize``), like ``BankOverlay``. ``read(ids)``
encodes only the references asked for, with the parameters last given to
``set_params`` (cached until they change), and rounds them to bfloat16 as an
unquantized bank stores them, so retrieval, the anti-copy filter and assembly run as
they do on a built bank of the same parameters. Nothing is written anywhere.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from m3jax.memory.encode import encode_references
from m3jax.memory.layout import BankLayout, BankRows


class LiveBank:
  """References (``.id``, ``.tokens`` of at most ``ref_len``) encoded on demand."""

  def __init__(self, cfg, references: Sequence, *, batch_size: int = 32):
    self.cfg = cfg
    self.layout = BankLayout.from_model(cfg)
    self.codebooks = None
    self.url = "live:"
    self._refs = {str(r.id): r for r in references}
    self._batch = int(batch_size)
    self._encode = jax.jit(lambda p, t, n: encode_references(p, cfg, t, n))
    self._params = None
    self._rows: dict[str, tuple] = {}
    self.encoded = 0  # references encoded since construction (tests, cost accounting)

  def set_params(self, params) -> None:
    """Later reads encode with ``params`` (earlier encodings are dropped)."""
    self._params = params
    self._rows = {}

  def contains(self, ids: Sequence[str]) -> np.ndarray:
    return np.array([str(i) in self._refs for i in ids], bool)

  def __contains__(self, ref_id) -> bool:
    return str(ref_id) in self._refs

  def __len__(self) -> int:
    return len(self._refs)

  def _encode_missing(self, ids: list[str]) -> None:
    ref_len, pad = self.cfg.memory.ref_len, self.cfg.pad_id
    for s in range(0, len(ids), self._batch):
      part = [self._refs[i] for i in ids[s : s + self._batch]]
      tokens = np.full((self._batch, ref_len), pad, np.int32)
      lengths = np.zeros((self._batch,), np.int32)
      for j, r in enumerate(part):
        t = np.asarray(r.tokens[:ref_len], np.int32)
        tokens[j, : len(t)], lengths[j] = t, len(t)
      enc = jax.device_get(self._encode(self._params, jnp.asarray(tokens), jnp.asarray(lengths)))
      for j, r in enumerate(part):
        self._rows[str(r.id)] = (
          np.asarray(enc.keys_BxLxKxMxD[j]).astype(ml_dtypes.bfloat16),
          np.asarray(enc.values_BxLxKxMxD[j]).astype(ml_dtypes.bfloat16),
          np.asarray(enc.mask_BxM[j]),
          np.asarray(enc.token_idx_BxLxKxM[j]),
        )
      self.encoded += len(part)

  def read(self, ids: Sequence[str]) -> BankRows:
    """Rows in stored form (bf16 keys/values [n, L, K, M, D], mask, token_idx)."""
    if self._params is None:
      raise RuntimeError("LiveBank.read before set_params(params)")
    ids = [str(i) for i in ids]
    unknown = [i for i in ids if i not in self._refs]
    if unknown:
      raise KeyError(f"reference ids not in the knowledge base: {unknown[:5]}")
    self._encode_missing(list(dict.fromkeys(i for i in ids if i not in self._rows)))
    if not ids:
      lay = self.layout
      kv = np.zeros((0,) + lay.row_shape, ml_dtypes.bfloat16)
      return BankRows(
        kv,
        kv.copy(),
        np.zeros((0, lay.tokens), bool),
        np.zeros((0, lay.num_layers, lay.kv_heads, lay.tokens), np.int32),
      )
    return BankRows(*[np.stack([self._rows[i][f] for i in ids]) for f in range(4)])

  def dequantize(self, keys, values):
    """Stored (bf16) -> float32, as an unquantized bank does."""
    return jnp.asarray(keys, jnp.float32), jnp.asarray(values, jnp.float32)
