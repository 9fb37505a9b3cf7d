"""A user's QA split by reference (m3jax.data.qa_split): trained or evaluated, never both."""

import json
import random

import pytest

from m3jax.data import prepare, qa_split, sources
from tests.data.conftest import tiny_data_cfg

COLORS = ["red", "blue", "green", "gold"]


def _items(n_refs=40, per_ref=3):
  return [
    dict(
      question=f"Question {q} about thing {i}?",
      answer=f"value{i}x{q}",
      choices=[f"value{i}x{q}", "other"],
      gold_ref_id=f"r{i}",
    )
    for i in range(n_refs)
    for q in range(per_ref)
  ]


def test_split_keeps_each_reference_on_one_side_whatever_the_order():
  items = _items() + [dict(question="No gold?", answer="x")]
  train, held_out = qa_split.split_by_reference(items, 0.5, seed=3)
  train_refs = {it["gold_ref_id"] for it in train}
  held_refs = {it.get("gold_ref_id") for it in held_out}
  assert train_refs and not train_refs & held_refs
  assert len(train) + len(held_out) == len(items)
  assert any("gold_ref_id" not in it for it in held_out)  # no reference: always evaluated
  assert 8 <= len(train_refs) <= 32  # about half of 40 references
  shuffled = list(items)
  random.Random(0).shuffle(shuffled)
  again, _ = qa_split.split_by_reference(shuffled, 0.5, seed=3)
  assert {it["gold_ref_id"] for it in again} == train_refs  # a hash, not the file's order
  other, _ = qa_split.split_by_reference(items, 0.5, seed=4)
  assert {it["gold_ref_id"] for it in other} != train_refs  # the seed draws another split


def test_documents_hold_one_reference_each_in_the_evaluated_format():
  items = _items(n_refs=5, per_ref=3)
  docs = qa_split.qa_documents(items, passes=2, seed=0)
  assert len(docs) == 10
  for doc in docs:
    lines = doc.split("\n")
    refs = {line.split("thing ")[1].split("?")[0] for line in lines}
    assert len(refs) == 1 and len(lines) == 3
    for line in lines:  # m3jax.task.qa_text's format, written out independently
      q = line.split(" A: ")[0][len("Q: ") :]
      it = next(it for it in items if it["question"] == q)
      assert line == f"Q: {it['question']} A: {it['answer']}"
  firsts = [d.split("\n") for d in docs if "thing 0?" in d]
  assert sorted(firsts[0]) == sorted(firsts[1])  # each pass: the same questions


def _world(tmp_path, train_lines):
  refs = [dict(id=f"r{i}", text=f"Thing{i} is painted {COLORS[i % 4]}.") for i in range(40)]
  qa = [
    dict(
      question=f"What color is Thing{i}?",
      answer=COLORS[i % 4],
      choices=COLORS,
      gold_ref_id=f"r{i}",
    )
    for i in range(40)
  ]
  paths = {}
  for name, records in (("refs", refs), ("text", train_lines), ("qa", qa)):
    p = tmp_path / f"{name}.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in records))
    paths[name] = str(p)
  return paths


def _prepared(tmp_path, paths, **overrides):
  cfg = tiny_data_cfg(
    tmp_path / "data", synthetic=False, real_text=False, vocab_kind="byte", **overrides
  )
  cfg.user_files.references = paths["refs"]
  cfg.user_files.train_text = paths["text"]
  cfg.user_files.qa = paths["qa"]
  p = prepare.prepare_data(cfg)
  return (
    sources.read_jsonl(p.train_text),
    sources.read_jsonl(p.qa_train),
    sources.read_jsonl(p.qa_eval),
  )


PROSE = [dict(text=f"Some prose about other thing number {i}.") for i in range(60)]


def test_prepare_trains_on_some_references_questions_and_evaluates_the_rest(tmp_path):
  paths = _world(tmp_path, PROSE)
  train, qa_train, qa_eval = _prepared(tmp_path, paths, user_qa_train_passes=3)
  trained = {it["gold_ref_id"] for it in qa_train}
  held = {it["gold_ref_id"] for it in qa_eval}
  assert trained and held and not trained & held and len(trained | held) == 40
  qa_docs = [d["text"] for d in train if d["source"] == "user_qa"]
  assert len(qa_docs) == 3 * len(trained)
  text = "\n".join(d["text"] for d in train)
  for i in range(40):  # a trained fact is in the training text, a held-out one never
    line = f"Q: What color is Thing{i}? A: {COLORS[i % 4]}"
    assert (line in text) == (f"r{i}" in trained)
    assert (f"Thing{i}?" in text) == (f"r{i}" in trained)
  assert sum(d["source"] == "user" for d in train) == len(PROSE) - len(PROSE) // 50


def test_prepare_leaves_the_qa_whole_when_off_or_when_the_text_asks_questions(tmp_path):
  paths = _world(tmp_path, PROSE)
  train, qa_train, qa_eval = _prepared(tmp_path / "off", paths, user_qa_train="off")
  assert not qa_train and len(qa_eval) == 40
  assert not any(d["source"] == "user_qa" for d in train)
  asks = _world(tmp_path, PROSE + [dict(text="Q: What is 2 + 2? A: 4")])
  train, qa_train, qa_eval = _prepared(tmp_path / "asks", asks)  # "auto"
  assert not qa_train and len(qa_eval) == 40
  train, qa_train, qa_eval = _prepared(tmp_path / "on", asks, user_qa_train="on")
  assert qa_train and len(qa_train) + len(qa_eval) == 40


def test_auto_evaluates_a_qa_file_too_small_to_split_and_on_refuses_it(tmp_path):
  paths = _world(tmp_path, PROSE)
  with open(paths["qa"]) as f:
    first = f.readline()
  with open(paths["qa"], "w") as f:  # one question: no reference left to hold out
    f.write(first)
  one_side = "user_qa_train_fraction=0.9"  # the one reference trains at 0.9
  train, qa_train, qa_eval = _prepared(tmp_path / "auto", paths, user_qa_train_fraction=0.9)
  assert not qa_train and len(qa_eval) == 1
  assert not any(d["source"] == "user_qa" for d in train)
  with pytest.raises(ValueError, match=f"{one_side} left no question to evaluate"):
    _prepared(tmp_path / "on", paths, user_qa_train="on", user_qa_train_fraction=0.9)


def test_bad_split_settings_are_errors(tmp_path):
  from m3jax.data.config import data_config_from

  with pytest.raises(ValueError, match="user_qa_train='maybe'"):
    data_config_from(tiny_data_cfg(tmp_path, user_qa_train="maybe"))
  with pytest.raises(ValueError, match=r"user_qa_train_fraction=1.0 must be in \(0, 1\)"):
    data_config_from(tiny_data_cfg(tmp_path, user_qa_train_fraction=1.0))
  with pytest.raises(ValueError, match="user_qa_train_passes=0"):
    data_config_from(tiny_data_cfg(tmp_path, user_qa_train_passes=0))


def test_a_workdir_saved_before_the_split_keeps_its_whole_qa():
  """Its config.json has no data.user_qa_train: it reads "off", the behaviour (and the
  vocabulary: QA documents are part of the corpus it is trained on) it was trained with."""
  from configs.memory3 import get_config
  from m3jax.run.config import with_serving_defaults

  saved = get_config("tiny")
  values = saved.to_dict()
  del values["data"]["user_qa_train"]
  import ml_collections

  assert with_serving_defaults(ml_collections.ConfigDict(values)).data.user_qa_train == "off"
  assert with_serving_defaults(saved).data.user_qa_train == "auto"
