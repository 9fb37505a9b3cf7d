"""In-context reference rows: the RAG baseline's copy signal, from the same data.

The RAG condition (m3jax.inference.rag, paper §7.4) runs the trained weights without
memory, with the retrieved references' text in the prompt:
``header1 ref_1 … ref_R header2 question``. Memory training teaches the model to read a
value out of memory (the word swap makes the values a row shares with its references
predictable only there, m3jax.data.counterfactual), but nothing teaches it to read the
same value out of its context, so on a small model the RAG condition measures how well a
memory-trained model happens to copy in context: a baseline weakened by our training,
a figure that favours memory.

``ContextRefs.replace_rows`` gives the RAG condition the same kind of signal. With
probability ``rate`` a memory-stage row becomes

    header1 ref(chunk 0) … ref(chunk n-1) header2 <the row's first n chunks> <pad …>

with its memories removed (``ref_lengths`` 0 for every chunk), where ``ref(c)`` is the
reference chunk ``c`` reads, already swapped with the row (so the swapped values are in
the context and nowhere else), and n ≤ ``max_refs`` chunks whose references fit in
the row together with their chunks' text. Only the row's text is scored (the headers
and references are context, and the rest of the row, whose swapped values no shown
reference holds, is padding). Pure numpy
on the host; the caller seeds ``rng`` by stream position, so a resumed run builds the
same rows.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from m3jax.data import shift


def context_row(
  targets_T: np.ndarray,
  loss_mask_T: np.ndarray,
  ref_tokens_CxN: np.ndarray,
  ref_lengths_C: np.ndarray,
  chunk_len: int,
  max_refs: int,
  header: list[int],
  separator: list[int],
  pad_id: int,
) -> tuple[np.ndarray, np.ndarray] | None:
  """(targets [T], loss_mask [T]) of one in-context row, or None when its first chunk
  reads no reference (nothing to show)."""
  t = targets_T.shape[0]
  prefix = list(header)
  shown = 0
  for c in range(min(max_refs, ref_lengths_C.shape[0])):
    ref = ref_tokens_CxN[c, : ref_lengths_C[c]].tolist()
    if not ref or len(prefix) + len(ref) + len(separator) + (c + 1) * chunk_len > t:
      break  # the references shown and their chunks' text must fit in the row
    prefix += ref
    shown = c + 1
  if shown == 0:
    return None
  prefix += list(separator)
  text = shown * chunk_len  # fits: the loop above checked it
  targets = np.full(t, pad_id, targets_T.dtype)
  mask = np.zeros(t, np.float32)
  targets[: len(prefix)] = prefix
  targets[len(prefix) : len(prefix) + text] = targets_T[:text]
  mask[len(prefix) : len(prefix) + text] = loss_mask_T[:text]
  return targets, mask


@dataclasses.dataclass(frozen=True)
class ContextRefs:
  """What an in-context row is built from: ``header``/``separator`` are the token ids of
  the RAG prompt's header1/header2 (m3jax.task.RAG_HEADER_*) in the run's vocabulary, and
  ``max_refs`` the references shown (the model's refs_per_chunk, as RAG retrieves)."""

  header: list[int]
  separator: list[int]
  max_refs: int
  pad_id: int

  def replace_rows(
    self, batch: dict, rate: float, rng: np.random.Generator, bos_id: int, chunk_len: int
  ) -> dict:
    """The batch with about ``rate`` of its rows turned into in-context reference rows (a
    memory-stage batch: ``ref_tokens`` [B, C, N], one reference per chunk)."""
    if not 0.0 <= rate <= 1.0:
      raise ValueError(f"in-context reference rate={rate} must be in [0, 1]")
    if self.max_refs < 1:
      raise ValueError(f"in-context rows need max_refs >= 1, got {self.max_refs}")
    chosen_B = rng.random(batch["targets"].shape[0]) < rate
    if not chosen_B.any():
      return batch
    targets, mask = batch["targets"].copy(), batch["loss_mask"].copy()
    lengths = batch["ref_lengths"].copy()
    for b in np.flatnonzero(chosen_B):
      made = context_row(
        targets[b],
        mask[b],
        batch["ref_tokens"][b],
        lengths[b],
        chunk_len,
        self.max_refs,
        self.header,
        self.separator,
        self.pad_id,
      )
      if made is not None:
        targets[b], mask[b] = made
        lengths[b] = 0
    return shift.with_targets(batch, targets, bos_id, loss_mask=mask, ref_lengths=lengths)
