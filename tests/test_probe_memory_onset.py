"""experiments/probe_memory_onset.py on the tiny config: stages, the NLL probe, the row."""

import json

import numpy as np
import pytest

from experiments import probe_memory_onset as probe
from m3jax.run.config import load_config
from m3jax.train.config import stage_dicts


def test_set_steps_two_stages_and_from_scratch():
  c = probe.set_steps(load_config("configs/memory3.py:tiny", []), [3, 5])
  assert [s["steps"] for s in stage_dicts(c.train)] == [3, 5]
  assert all(s["warmup_steps"] <= max(1, s["steps"] // 5) for s in stage_dicts(c.train))
  c = probe.set_steps(load_config("configs/memory3.py:tiny", []), [0, 7])
  (only,) = stage_dicts(c.train)
  assert only["use_memory"] and only["init_from"] == "" and only["steps"] == 7
  with pytest.raises(ValueError, match="one per stage"):
    probe.set_steps(load_config("configs/memory3.py:tiny", []), [1, 2, 3])


@pytest.mark.integration
def test_probe_runs_and_memory_reaches_the_answer(tmp_path):
  out = tmp_path / "rows.jsonl"
  row = probe.main(
    [
      "--config",
      "configs/memory3.py:tiny",
      "--name",
      "t",
      "--steps",
      "2,2",
      "--questions",
      "8",
      "--workdir",
      str(tmp_path / "work"),
      "--out",
      str(out),
      f"--config.data.data_dir={tmp_path / 'data'}",
    ]
  )
  assert json.loads(out.read_text().splitlines()[-1]) == json.loads(json.dumps(row))
  for cond in ("no_memory", "oracle_memory"):
    assert 0.0 <= row["multiple_choice"][cond] <= 1.0
  nll = row["nll"]
  for kind in ("none", "gold", "random"):
    assert np.isfinite(nll[kind]["answer_first_token"]) and nll[kind]["qa_text"] > 0
  # The memories are wired into the forward pass: gold and random references change the
  # NLL, and differently (an untrained model still mixes in what it attends to).
  assert nll["gold"]["qa_text"] != nll["none"]["qa_text"]
  assert nll["gold"]["qa_text"] != nll["random"]["qa_text"]


def test_answer_masks_mark_the_answer_first_token_and_the_rest():
  from tests.memory.helpers import WordTokenizer

  vocab = WordTokenizer()
  items = [
    {"question": "Where was Ann Lee born?", "answer": "North Gate Town"},
    {"question": "What color is the flag?", "answer": "red"},
  ]
  tokens, first, later = probe.qa_token_masks(vocab, items, bos_id=2, chunk=8)
  assert tokens.shape == (2, 16) and first.shape == later.shape == (2, 15)
  targets = tokens[:, 1:]
  for i, it in enumerate(items):
    answer = [vocab.vocab[w] for w in it["answer"].split()]  # the words, looked up by hand
    assert targets[i][first[i]].tolist() == answer[:1]
    assert targets[i][later[i]].tolist() == answer[1:]
  assert not (first & later).any()
