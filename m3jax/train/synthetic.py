"""A deterministic synthetic batch source implementing the training batch contract.

For tests, benchmarks and runs without prepared data (``config.train.data_source =
"synthetic"``). Batch i is a pure function of (seed, i, process), so its state is one
integer and resuming is exact.
"""

from __future__ import annotations

import numpy as np

_FIRST_REGULAR_ID = 5  # ids below are specials (pad, eos, ..., <s>, <ref>)


class SyntheticIterator:
  """Yields ``inputs/targets/loss_mask`` [B, T] and ``ref_tokens`` [B, C, N],
  ``ref_lengths`` [B, C] (some zero: "no reference", as after the overlap filter).

  Each row repeats short random motifs so a model can learn something, and each chunk's
  reference is drawn from the same motifs, so memories carry signal.
  """

  def __init__(
    self,
    *,
    batch_size: int,
    seq_len: int,
    vocab_size: int,
    chunk_len: int,
    ref_len: int,
    bos_id: int,
    with_refs: bool = True,
    seed: int = 0,
    process_index: int = 0,
  ):
    self.batch_size, self.seq_len, self.vocab_size = batch_size, seq_len, vocab_size
    self.chunk_len, self.ref_len, self.bos_id = chunk_len, ref_len, bos_id
    self.with_refs, self.seed, self.process_index = with_refs, seed, process_index
    self.index = 0

  def __iter__(self):
    return self

  def _row(self, rng, motifs, length):
    picks = rng.integers(0, len(motifs), size=length // 4 + 2)
    return np.concatenate([motifs[p] for p in picks])[:length]

  def __next__(self) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([self.seed, self.index, self.process_index])
    self.index += 1
    b, t = self.batch_size, self.seq_len
    motifs = rng.integers(_FIRST_REGULAR_ID, self.vocab_size, size=(16, 8))
    seq = np.stack([self._row(rng, motifs, t + 1) for _ in range(b)]).astype(np.int32)
    seq[:, 0] = self.bos_id
    batch = {
      "inputs": seq[:, :-1].copy(),
      "targets": seq[:, 1:].copy(),
      "loss_mask": np.ones((b, t), np.float32),
    }
    if self.with_refs:
      c, n = t // self.chunk_len, self.ref_len
      lengths = rng.integers(0, n + 1, size=(b, c)).astype(np.int32)
      lengths[rng.random((b, c)) < 0.2] = 0
      refs = np.stack([self._row(rng, motifs, n) for _ in range(b * c)]).reshape(b, c, n)
      refs = np.where(np.arange(n) < lengths[..., None], refs, 0).astype(np.int32)
      batch.update(ref_tokens=refs, ref_lengths=lengths)
    return batch

  def state(self) -> dict:
    return {"index": self.index}

  def restore(self, state: dict) -> None:
    self.index = int(state["index"])
