"""A batch's ``inputs`` are its ``targets`` shifted right behind ``<s>``: one place for it.

The pipeline builds every batch that way, and the transforms that rewrite a batch's
targets (counterfactual swaps, repetition rows) rebuild its inputs the same way.
"""

from __future__ import annotations

import numpy as np


def inputs_for(targets_BxT: np.ndarray, bos_id: int) -> np.ndarray:
  """``[<s>, targets[:-1]]`` per row: the next-token inputs of ``targets``."""
  inputs_BxT = np.empty_like(targets_BxT)
  inputs_BxT[:, 0] = bos_id
  inputs_BxT[:, 1:] = targets_BxT[:, :-1]
  return inputs_BxT


def with_targets(batch: dict, targets_BxT: np.ndarray, bos_id: int, **arrays) -> dict:
  """A copy of ``batch`` with new ``targets``, their ``inputs``, and any other arrays."""
  return dict(batch, inputs=inputs_for(targets_BxT, bos_id), targets=targets_BxT, **arrays)
