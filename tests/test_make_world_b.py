"""experiments/make_world_b.py: a small world B in the BYO format that the loader accepts,
whose held-out facts are only in the knowledge base."""

import json
import re

import pytest

from experiments import make_world_b
from tests.byo_files import assert_loadable


def _write(tmp_path, name, entities=60, seed=11):
  out = tmp_path / name
  make_world_b.main(["--out", str(out), "--entities", str(entities), "--seed", str(seed)])
  return out


def _lines(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  out = _write(tmp_path_factory.mktemp("worldb"), "w")
  return (
    out,
    _lines(out / "references.jsonl"),
    _lines(out / "train.jsonl"),
    _lines(out / "qa.jsonl"),
  )


def test_files_parse_and_the_loader_accepts_them(world):
  out, refs, train, qa = world
  assert_loadable(out, refs, train, qa, 60)


def test_references_are_short_sentences_with_every_fact(world):
  _, refs, _, qa = world
  assert all(len(r["text"].split()) < 60 and "=" not in r["text"] for r in refs)
  text_of = {r["id"]: r["text"] for r in refs}
  for it in qa:
    assert it["answer"] in text_of[it["gold_ref_id"]], it
    assert it["entity"] in text_of[it["gold_ref_id"]], it


def test_questions_have_four_distinct_choices_with_the_answer(world):
  _, _, _, qa = world
  for it in qa:
    assert len(it["choices"]) == 4 and len(set(it["choices"])) == 4, it
    assert it["answer"] in it["choices"], it
  kinds = {it["value_kind"] for it in qa}
  assert kinds == {"person", "place", "list", "number"}
  # Each question is one of its attribute's phrasings, and every attribute has two or more.
  for it in qa:
    kind = it["gold_ref_id"].split("-")[1]
    phrasings = make_world_b._KINDS[kind]["questions"][it["attribute"]]
    assert len(phrasings) >= 2
    assert it["question"] in [p.format(e=it["entity"]) for p in phrasings], it


def test_held_out_facts_appear_only_in_the_knowledge_base(world):
  _, refs, train, qa = world
  corpus = "\n".join(d["text"] for d in train)
  held = {it["entity"] for it in qa}
  for name in held:  # so no training document states a fact of a held-out entity
    assert not re.search(rf"\b{re.escape(name)}\b", corpus), name
  for it in qa:
    if it["value_kind"] == "person":  # invented people are unique to their entity
      assert it["answer"] not in corpus, it
    for doc in train:
      assert not (it["entity"] in doc["text"] and it["answer"] in doc["text"]), (it, doc)
  # Prose about the train entities (those without questions): 2-4 snippets each.
  train_refs = {r["id"] for r in refs} - {it["gold_ref_id"] for it in qa}
  assert train_refs and len(train) >= 1.5 * len(train_refs)
  assert "Q:" not in corpus


def test_equal_seeds_write_equal_files_and_other_seeds_differ(tmp_path):
  def blob(out):
    return [(out / f"{n}.jsonl").read_bytes() for n in ("references", "train", "qa")]

  a = blob(_write(tmp_path, "a", 40, 5))
  b = blob(_write(tmp_path, "b", 40, 5))
  c = blob(_write(tmp_path, "c", 40, 6))
  assert a == b
  assert all(x != y for x, y in zip(a, c))
