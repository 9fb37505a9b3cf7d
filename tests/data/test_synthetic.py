"""The invented world: deterministic, held-out facts only in the KB, references distinct."""

import dataclasses
import re

from m3jax.data import synthetic
from m3jax.memory import overlap
from m3jax.data import vocab as vocab_lib

CFG = synthetic.WorldConfig(num_entities=80, filler_docs=10)


def test_deterministic():
  a, b = synthetic.build_world(CFG), synthetic.build_world(CFG)
  assert a == b
  c = synthetic.build_world(dataclasses.replace(CFG, seed=1))
  assert c.references != a.references


def test_heldout_names_absent_from_training_text():
  w = synthetic.build_world(CFG)
  held = [e for e in w.entities if e.heldout]
  assert len(held) == round(CFG.heldout_fraction * CFG.num_entities)
  train_blob = "\n".join(d["text"] for d in w.train_texts + w.valid_texts)
  train_blob += "\n".join(q["question"] + q["answer"] for q in w.train_qa)
  for e in held:
    assert not re.search(rf"\b{e.name}\b", train_blob), e.name
  held_ids = {e.ref_id for e in held}
  assert {q["gold_ref_id"] for q in w.heldout_qa} == held_ids
  ref_text = {r["id"]: r["text"] for r in w.references}
  for q in w.heldout_qa:  # the answer is in (and only needs) the gold reference
    assert q["entity"] in ref_text[q["gold_ref_id"]]
    assert f"= {q['answer']}" in ref_text[q["gold_ref_id"]]


def test_qa_choices():
  w = synthetic.build_world(CFG)
  values = {}
  for e in w.entities:
    for a, v in e.facts:
      values.setdefault(a, set()).add(v)
  for q in w.train_qa + w.heldout_qa:
    assert q["answer"] in q["choices"]
    assert len(set(q["choices"])) == len(q["choices"]) == CFG.num_choices
    assert set(q["choices"]) <= values[q["attribute"]]


def test_prose_overlap_with_reference_below_leakage_threshold():
  """Training renderings share no template with the KB, so Eq. 6 stays under 0.9."""
  w = synthetic.build_world(CFG)
  v = vocab_lib.ByteVocab()
  refs = {e.name: v.encode(r["text"]) for e, r in zip(w.entities, w.references)}
  for doc in w.train_texts[:60]:
    names = [n for n in refs if re.search(rf"\b{n}\b", doc["text"])]
    for n in names:
      assert overlap.overlap(v.encode(doc["text"]), refs[n]) <= 0.9
