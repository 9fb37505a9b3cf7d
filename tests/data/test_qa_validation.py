"""Bad QA input is a one-line error naming the file and the line, when it is loaded."""

import json

import pytest

from m3jax.data.sources import read_jsonl

GOOD = dict(
  question="What is the job of Zorblat?",
  answer="baker",
  choices=["baker", "poet", "miner"],
  gold_ref_id="ref-0",
)


def _write(tmp_path, records):
  path = tmp_path / "qa.jsonl"
  # A blank line first: line numbers count it, record indices would not.
  path.write_text("\n" + "".join(json.dumps(r) + "\n" for r in records))
  return str(path)


@pytest.mark.parametrize(
  "bad, message",
  [
    (dict(GOOD, choices=["baker", "poet", "baker"]), r"duplicate choices \['baker'\]"),
    (dict(GOOD, choices=["baker", "poet", " poet "]), r"duplicate choices \['poet'\]"),
    (dict(GOOD, choices=["poet", "miner"]), r"'baker' is not among the choices"),
    (dict(GOOD, choices="baker poet"), "must be a list of strings"),
    (dict(GOOD, gold_ref_id="ref-404"), "gold_ref_id 'ref-404' is not a reference id"),
  ],
)
def test_bad_record_names_file_and_line(tmp_path, bad, message):
  path = _write(tmp_path, [GOOD, GOOD, bad, GOOD])
  with pytest.raises(ValueError, match=message) as e:
    read_jsonl(path, "qa", ref_ids={"ref-0", "ref-1"})
  text = str(e.value)
  assert text.startswith(f"{path}:4: ") and "\n" not in text


def test_good_file_loads_and_gold_ids_are_checked_only_when_known(tmp_path):
  no_choices = {k: v for k, v in GOOD.items() if k != "choices"}
  path = _write(tmp_path, [GOOD, dict(GOOD, gold_ref_id="ref-1"), no_choices])
  assert len(read_jsonl(path, "qa", ref_ids={"ref-0", "ref-1"})) == 3
  unknown = _write(tmp_path, [dict(GOOD, gold_ref_id="elsewhere")])
  assert len(read_jsonl(unknown, "qa")) == 1  # no reference ids given: not checked


def test_prepare_rejects_a_user_qa_file_with_an_unknown_gold_id(tmp_path):
  """The BYO path: the user QA file is checked against the prepared knowledge base."""
  from configs.memory3 import get_config
  from m3jax.data.prepare import prepare_data

  refs = tmp_path / "refs.jsonl"
  refs.write_text(
    "".join(
      json.dumps(dict(id=f"r{i}", text=f"Item {i} is blue number {i}.")) + "\n" for i in range(8)
    )
  )
  qa = _write(tmp_path, [dict(GOOD, gold_ref_id="r1"), dict(GOOD, gold_ref_id="r9")])
  config = get_config("tiny")
  config.data.data_dir = str(tmp_path / "data")
  config.data.synthetic = False
  config.data.real_text = False
  config.data.user_files.references = str(refs)
  config.data.user_files.train_text = str(refs)
  config.data.user_files.qa = qa
  with pytest.raises(ValueError, match=rf"{qa}:3: gold_ref_id 'r9'"):
    prepare_data(config.data)


def test_evaluation_checks_gold_ids_of_items_read_elsewhere():
  from m3jax.evaluate.evaluation import check_gold_ids

  check_gold_ids([GOOD], {"ref-0"})
  with pytest.raises(ValueError, match="QA item 1 .*gold_ref_id 'ref-404'"):
    check_gold_ids([GOOD, dict(GOOD, gold_ref_id="ref-404")], {"ref-0"})
