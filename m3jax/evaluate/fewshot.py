"""Few-shot QA prompts (paper §7, Tables 16 and 24: its QA is evaluated 5-shot).

A base model pretrained on prose has never seen the ``Q: … A:`` format, so zero-shot it
answers in prose and exact match is near zero whatever it knows. Demonstrations teach the
format in context, the same for every condition. They come from questions about *other*
references than the one asked about: the training QA when the data has it, otherwise the
other evaluation questions (leave-one-reference-out), never the question's own fact.

Retrieval stays on the question: the demonstrations must not steer which memories or RAG
references a question gets (§7.4: "querying with the question text only, so the few-shot
examples do not distract retrieval"). ``QuestionRetrieval`` answers every chunk query of a
row with the retrieval of that row's question.
"""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np

from m3jax.task import ChunkQuery, qa_prompt


def demonstrations(
  items: Sequence[dict], pool: Sequence[dict], shots: int, seed: int = 0
) -> list[str]:
  """One prefix per item: ``shots`` lines ``Q: … A: answer`` drawn from ``pool``.

  A pool entry is never about the item's reference (``gold_ref_id``) or question; the
  draw is deterministic in (seed, question), whatever batch the item is in. Empty strings when ``shots`` is 0.
  """
  if shots <= 0:
    return [""] * len(items)
  pool = [p for p in pool if p.get("answer")]
  out = []
  for it in items:
    rng = np.random.default_rng([seed, zlib.crc32(it["question"].encode())])
    ok = [
      p
      for p in (pool[j] for j in rng.permutation(len(pool))[: 4 * shots + 8])
      if p["question"] != it["question"]
      and (p.get("gold_ref_id") is None or p.get("gold_ref_id") != it.get("gold_ref_id"))
    ]
    if len(ok) < shots:
      raise ValueError(
        f"few-shot QA needs {shots} demonstrations about other references "
        f"than {it.get('gold_ref_id')!r}, found {len(ok)}; lower "
        "eval.few_shot or supply more QA"
      )
    out.append("".join(f"{qa_prompt(p['question'])} {p['answer']}\n" for p in ok[:shots]))
  return out


class QuestionRetrieval:
  """Wraps a RetrievedMemory: every chunk of row i retrieves with row i's question."""

  def __init__(self, source, question_tokens: Sequence[np.ndarray]):
    self.source = source
    self.question_tokens = [np.asarray(q) for q in question_tokens]

  def _as_question(self, queries: Sequence[ChunkQuery]) -> list[ChunkQuery]:
    return [ChunkQuery(q.row, q.chunk, self.question_tokens[q.row]) for q in queries]

  def retrieve_ids(self, queries: Sequence[ChunkQuery]) -> np.ndarray:
    return self.source.retrieve_ids(self._as_question(queries))

  def __call__(self, queries: Sequence[ChunkQuery]):
    return self.source(self._as_question(queries))
