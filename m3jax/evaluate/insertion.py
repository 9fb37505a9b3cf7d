"""Runtime knowledge insertion measured by QA: before inserting, after, after deleting.

Lives in evaluate (not inference) because it runs the QA evaluation; the mechanism,
``LiveKnowledge``, is in ``m3jax.inference.knowledge``.
"""

from __future__ import annotations

from m3jax.evaluate import qa
from m3jax.inference.knowledge import LiveKnowledge
from m3jax.inference.memory_sources import RetrievedMemory


def insertion_roundtrip(
  knowledge: LiveKnowledge,
  cfg,
  params,
  vocab,
  items,
  records,
  *,
  generator=None,
  max_new_tokens: int = 0,
  batch_size: int = 16,
  refit_index: bool = True,
  progress: bool = False,
) -> dict:
  """QA on ``items`` (memory condition) before inserting ``records``, after inserting them,
  and after deleting them again: {"before", "after_insert", "after_delete"} -> accuracies.

  ``records`` must not be in the bank yet (delete them first to replay an existing fact).
  """

  def run():
    source = RetrievedMemory(knowledge.feeder(), vocab)
    conds = qa.make_conditions(vocab, cfg.memory.chunk_len, retrieved=source, names=["memory"])
    res = qa.evaluate_qa(
      cfg,
      params,
      vocab,
      items,
      conds,
      max_new_tokens=max_new_tokens,
      batch_size=batch_size,
      generator=generator,
      progress=progress,
    )
    return {
      "exact_match": res["exact_match"]["memory"],
      "multiple_choice": res["multiple_choice"]["memory"],
      "gold_retrieved": _gold_rate(knowledge, items, res["retrieved_ids"].get("memory", [])),
    }

  out = {"before": run()}
  ids = knowledge.insert(records, refit_index=refit_index)
  out["after_insert"] = run()
  knowledge.delete(ids, refit_index=refit_index)
  out["after_delete"] = run()
  return out


def _gold_rate(knowledge, items, ids):
  """Share of items whose gold line (any of its pieces) was retrieved."""
  pairs = [(it.get("gold_ref_id"), row) for it, row in zip(items, ids) if it.get("gold_ref_id")]
  hits = [bool(set(knowledge.expand([g]) or [g]).intersection(row)) for g, row in pairs]
  return sum(hits) / len(pairs) if pairs else None
