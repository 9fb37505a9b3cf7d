"""model.smeared_keys set from the knowledge base (m3jax.run.key_smearing): on for prose,
off for key = value tables, as configured when no answer stands in its reference."""

import collections
import json

import pytest

from configs.memory3 import get_config
from m3jax.run.key_smearing import fit_smeared_keys, preceding_words, top_word_share

PROSE = ["{e} was launched in {v}.", "Built by {v}, {e} sails north.", "{e} carries {v} and salt."]
TABLE = ["{e} (ship) | launched = {v}", "{e} (ship) | builder = {v}", "{e} (ship) | cargo = {v}"]


def _world(templates, n=60):
  refs, qa = {}, []
  for i in range(n):
    e, v = f"Ship{i}", f"Val{i}"
    refs[f"r{i}"] = templates[i % 3].format(e=e, v=v)
    qa.append(dict(question=f"What about {e}?", answer=v, gold_ref_id=f"r{i}"))
  return refs, qa


def test_the_word_before_each_answer_is_counted_where_it_stands():
  refs = {"a": "X was launched in 1842.", "b": "Y | year = 1901", "c": "no answer here"}
  qa = [
    dict(answer="1842", gold_ref_id="a"),
    dict(answer="1901", gold_ref_id="b"),
    dict(answer="1777", gold_ref_id="c"),  # not in its reference: skipped
    dict(answer="1842", gold_ref_id="zzz"),  # unknown reference: skipped
    dict(answer="X", gold_ref_id="a"),  # at the start: no word before it
  ]
  assert preceding_words(refs, qa) == collections.Counter({"in": 1, "=": 1})


@pytest.mark.parametrize(
  "templates, word, share", [(PROSE, "in", 1 / 3), (TABLE, "=", 1.0)], ids=["prose", "table"]
)
def test_a_table_has_one_word_before_every_value_and_prose_does_not(templates, word, share):
  got_word, got_share, n = top_word_share(preceding_words(*_world(templates)))
  assert n == 60 and got_share == pytest.approx(share)
  assert got_word == word or share < 0.5  # prose: three words tie at a third


def _byo(tmp_path, templates):
  refs, qa = _world(templates)
  (tmp_path / "refs.jsonl").write_text(
    "".join(json.dumps(dict(id=k, text=t)) + "\n" for k, t in refs.items())
  )
  (tmp_path / "qa.jsonl").write_text(
    "".join(json.dumps({**q, "choices": [q["answer"], "none"]}) + "\n" for q in qa)
  )
  config = get_config("tiny")
  config.data.data_dir = str(tmp_path / "data")
  config.data.synthetic = False
  config.data.real_text = False
  config.data.vocab_kind = "byte"
  config.data.user_files.references = str(tmp_path / "refs.jsonl")
  config.data.user_files.train_text = str(tmp_path / "refs.jsonl")
  config.data.user_files.qa = str(tmp_path / "qa.jsonl")
  config.model.smeared_keys_fit = 0.5
  return config


@pytest.mark.parametrize("templates, on", [(PROSE, True), (TABLE, False)], ids=["prose", "table"])
def test_fit_turns_smeared_keys_on_for_prose_and_off_for_a_table(tmp_path, capsys, templates, on):
  config = _byo(tmp_path, templates)
  config.model.smeared_keys = not on  # the fit decides, whatever was configured
  assert fit_smeared_keys(config).model.smeared_keys is on
  assert f"model.smeared_keys={on}" in capsys.readouterr().out


def test_fit_off_or_without_answers_keeps_the_configured_value(tmp_path, capsys):
  config = _byo(tmp_path, TABLE)
  config.model.smeared_keys_fit = 0.0
  config.model.smeared_keys = True
  assert fit_smeared_keys(config).model.smeared_keys is True  # fit 0: as given
  (tmp_path / "other").mkdir()  # a QA file whose answers no reference holds
  config = _byo(tmp_path / "other", TABLE)
  (tmp_path / "other" / "qa.jsonl").write_text(
    "".join(
      json.dumps(dict(question=f"q{i}?", answer=f"absent{i}", choices=[f"absent{i}", "x"])) + "\n"
      for i in range(60)
    )
  )
  config.model.smeared_keys = True
  assert fit_smeared_keys(config).model.smeared_keys is True
  assert "no training answer stands in its gold reference" in capsys.readouterr().out
