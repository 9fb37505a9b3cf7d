"""experiments/make_world_c.py: a small world C in the BYO format that the loader accepts,
whose held-out facts are only in the knowledge base."""

import json
import re

import pytest

from experiments import make_world_c
from tests.byo_files import assert_loadable
from m3jax.evaluate import kinds


def _write(tmp_path, name, entities=120, seed=11):
  out = tmp_path / name
  world = make_world_c.main(["--out", str(out), "--entities", str(entities), "--seed", str(seed)])
  return out, world


def _lines(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  out, built = _write(tmp_path_factory.mktemp("worldc"), "w")
  return (
    out,
    built["entities"],
    _lines(out / "references.jsonl"),
    _lines(out / "train.jsonl"),
    _lines(out / "qa.jsonl"),
  )


def test_files_parse_and_the_loader_accepts_them(world):
  out, _, refs, train, qa = world
  assert_loadable(out, refs, train, qa, 120)
  assert all(set(it) == {"question", "answer", "choices", "gold_ref_id", "attribute"} for it in qa)


def test_references_are_prose_with_every_fact(world):
  _, ents, refs, _, qa = world
  text_of = {r["id"]: r["text"] for r in refs}
  lengths = sorted(len(r["text"].split()) for r in refs)
  assert 30 <= lengths[0] and lengths[-1] <= 110 and "=" not in "".join(text_of.values())
  assert 0.03 < sum(n > 80 for n in lengths) / len(lengths) < 0.25  # some get split
  for e in ents:  # all four facts, of the entity it names
    assert e["name"] in text_of[e["id"]] and len(e["values"]) == 4
    assert all(v in text_of[e["id"]] for v in e["values"].values()), e
  for it in qa:
    assert it["answer"] in text_of[it["gold_ref_id"]], it
  # About a fifth name another entity (a distractor for retrieval).
  names = {e["name"] for e in ents}
  mentions = sum(
    any(w in names and w != e["name"] for w in re.findall(r"[A-Z][a-z]+", text_of[e["id"]]))
    for e in ents
  )
  assert 0.08 < mentions / len(ents) < 0.35


def test_questions_have_four_distinct_choices_with_the_answer(world):
  _, ents, _, _, qa = world
  of = {e["id"]: e for e in ents}
  for it in qa:
    assert len(it["choices"]) == 4 and len(set(it["choices"])) == 4, it
    assert it["answer"] in it["choices"], it
  # One question per attribute of each held-out entity, in one of 2-3 phrasings.
  held = [e for e in ents if not e["train"]]
  assert len(qa) == 4 * len(held) and {it["gold_ref_id"] for it in qa} == {e["id"] for e in held}
  for it in qa:
    e = of[it["gold_ref_id"]]
    phrasings = make_world_c.TYPES[e["kind"]]["attrs"][it["attribute"]]["ask"]
    assert 2 <= len(phrasings) <= 3
    assert it["question"] in [p.format(e=e["name"]) for p in phrasings], it
    assert it["answer"] == e["values"][it["attribute"]]
  assert set(kinds.value_kinds(qa).values()) == set(kinds.KINDS)


def test_every_attribute_has_the_kind_it_was_built_as():
  expect = dict(person="name", place="name", list="closed_list", number="number", year="number")
  want = {a: expect[s["kind"]] for t in make_world_c.TYPES.values() for a, s in t["attrs"].items()}
  assert kinds.value_kinds(make_world_c.build(400, 3)["qa"]) == want
  assert len(want) == 16


def test_held_out_facts_appear_only_in_the_knowledge_base(world):
  _, ents, _, train, qa = world
  corpus = "\n".join(d["text"] for d in train)
  of = {e["id"]: e for e in ents}
  for e in ents:  # no training document names a held-out entity
    found = re.search(rf"\b{re.escape(e['name'])}\b", corpus)
    assert bool(found) == e["train"], e
  vk = kinds.value_kinds(qa)
  for it in qa:
    if vk[it["attribute"]] == "name":  # invented names are unique to their entity
      assert not re.search(rf"\b{re.escape(it['answer'])}\b", corpus), it
    name = of[it["gold_ref_id"]]["name"]
    for doc in train:
      assert not (name in doc["text"] and it["answer"] in doc["text"]), (it, doc)
  # Prose about the train entities (those without questions): about three documents each,
  # plus filler that names no entity.
  n_train = sum(e["train"] for e in ents)
  assert n_train == len(ents) // 2 and 2.5 * n_train <= len(train) <= 4 * n_train
  filler = [d for d in train if not any(e["name"] in d["text"] for e in ents)]
  assert 0.05 * len(train) < len(filler) < 0.2 * len(train)
  assert "Q:" not in corpus and "A:" not in corpus


def test_equal_seeds_write_equal_files_and_other_seeds_differ(tmp_path):
  def blob(out):
    return [(out / f"{n}.jsonl").read_bytes() for n in ("references", "train", "qa")]

  a = blob(_write(tmp_path, "a", 60, 5)[0])
  b = blob(_write(tmp_path, "b", 60, 5)[0])
  c = blob(_write(tmp_path, "c", 60, 6)[0])
  assert a == b
  assert all(x != y for x, y in zip(a, c))


def test_refuses_a_directory_with_other_files(tmp_path):
  out, _ = _write(tmp_path, "w", 40, 1)
  _write(tmp_path, "w", 40, 2)  # its own three files may be rewritten
  (out / "notes.txt").write_text("keep me")
  with pytest.raises(SystemExit, match="notes.txt"):
    _write(tmp_path, "w", 40, 3)
  assert (out / "notes.txt").read_text() == "keep me"
