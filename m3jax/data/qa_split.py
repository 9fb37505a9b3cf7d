"""A user's QA split by reference: part teaches the question format, the rest is evaluated.

A knowledge base and prose that never ask a question leave the model to answer ``Q: What
is the home port of the ship X? A:`` zero-shot: it reads the memory well enough to rank
four choices, but it has never learned which words of a reference a question's wording
asks for, nor to stop after the value (docs/design.md, "Session 17"). The synthetic
world trains on QA about its train entities and evaluates on its held-out ones; this
module does the same with a user's QA file, by ``gold_ref_id``:

* :func:`split_by_reference` sends every question about a reference drawn for training
  (a seeded hash of the id, so the split does not depend on the file's order) to
  training, the others to evaluation. A reference's facts are therefore either trained
  on or held out, never both; questions without a ``gold_ref_id`` are always evaluated.
* :func:`qa_documents` renders the training questions as documents, one per reference
  and pass, its questions in a fresh order: ``Q: … A: answer`` lines, the format
  :func:`m3jax.task.qa_prompt` evaluates. In the memory stage such a chunk retrieves its
  reference like any other text, and the counterfactual swap (``data.memory_swap_rate``)
  replaces the answer in the row and the memory alike, so the lookup is what it teaches.
"""

from __future__ import annotations

import random
import zlib
from typing import Sequence

from m3jax.task import qa_text

MODES = ("auto", "on", "off")


def is_training_reference(ref_id: str, fraction: float, seed: int) -> bool:
  """Whether questions about ``ref_id`` train (a seeded hash below ``fraction``)."""
  return zlib.crc32(f"{seed}:{ref_id}".encode()) < fraction * 2**32


def split_by_reference(
  items: Sequence[dict], fraction: float, seed: int
) -> tuple[list[dict], list[dict]]:
  """(training items, evaluation items); a ``gold_ref_id``'s questions go to one side."""
  train: list[dict] = []
  held_out: list[dict] = []
  for it in items:
    ref = it.get("gold_ref_id")
    (train if ref and is_training_reference(ref, fraction, seed) else held_out).append(it)
  return train, held_out


def qa_documents(items: Sequence[dict], passes: int, seed: int) -> list[str]:
  """``passes`` documents per reference, each its questions' ``Q: … A: answer`` lines in a
  fresh order (the synthetic world's QA documents, m3jax.data.synthetic.build_world)."""
  by_ref: dict[str, list[dict]] = {}
  for it in items:
    by_ref.setdefault(it["gold_ref_id"], []).append(it)
  rng = random.Random(seed)
  docs = []
  for _ in range(passes):
    for ref in sorted(by_ref):
      lines = [qa_text(it["question"], it["answer"]) for it in by_ref[ref]]
      rng.shuffle(lines)
      docs.append("\n".join(lines))
  return docs
