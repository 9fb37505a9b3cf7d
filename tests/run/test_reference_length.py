"""model.memory.ref_len fitted to the knowledge base (m3jax.run.reference_length)."""

import argparse
import json

import numpy as np
import pytest

from configs.memory3 import get_config
from m3jax.run.reference_length import CAP, fit_ref_len, fitted_length


def test_fitted_length_holds_the_quantile_line_in_16_token_steps():
  lengths = np.array([10] * 80 + [40] * 15 + [200] * 5)  # the 90% line: 40 tokens
  assert fitted_length(lengths, 0.9, 32) == 48  # 40 rounded up to a multiple of 16
  assert fitted_length(lengths, 0.8, 32) == 32  # never shrinks: 10 -> 16 < 32
  assert fitted_length(lengths, 0.99, 32) == CAP == 128  # 200 capped at the paper's 128
  assert fitted_length(lengths, 0.0, 32) == 32  # off
  assert fitted_length(np.array([33]), 0.5, 32) == 48


def _byo(tmp_path, n_words):
  """A byte-vocabulary knowledge base whose lines are `n_words` 5-byte words long."""
  refs = tmp_path / "refs.jsonl"
  refs.write_text(
    "".join(
      json.dumps(dict(id=f"r{i}", text=" ".join(["word"] * (n_words + i % 3)))) + "\n"
      for i in range(30)
    )
  )
  config = get_config("tiny")
  config.data.data_dir = str(tmp_path / "data")
  config.data.synthetic = False
  config.data.real_text = False
  config.data.vocab_kind = "byte"
  config.data.user_files.references = str(refs)
  config.data.user_files.train_text = str(refs)
  return config


def test_fit_grows_ref_len_to_the_knowledge_base(tmp_path, capsys):
  config = _byo(tmp_path, 12)  # lines of 12-14 words: 59, 64, 69 bytes
  config.model.memory.ref_len_fit = 0.9
  fit_ref_len(config)
  assert config.model.memory.ref_len == 80  # the 90% line has 69 bytes
  said = capsys.readouterr().out
  assert "model.memory.ref_len 32 -> 80" in said
  assert "split" not in said  # every line now fits whole
  fit_ref_len(config)  # a fitted config fits again to itself
  assert config.model.memory.ref_len == 80
  (tmp_path / "off").mkdir()
  off = _byo(tmp_path / "off", 12)
  assert fit_ref_len(off).model.memory.ref_len == 32  # ref_len_fit 0: as given


def test_fit_says_once_which_lines_the_fitted_length_still_splits(tmp_path, capsys):
  config = _byo(tmp_path, 12)  # ten lines each of 59, 64 and 69 bytes
  config.model.memory.ref_len_fit = 0.5  # the median line, 64 bytes: ref_len 64
  fit_ref_len(config)
  assert config.model.memory.ref_len == 64
  said = capsys.readouterr().out
  assert said.count("knowledge-base lines") == 1
  # A third of the lines split (> 10%): the note names the length that keeps 90% whole.
  assert "10 of the 30 knowledge-base lines are longer than model.memory.ref_len=64" in said
  assert "--config.model.memory.ref_len=69 or more" in said


def test_fit_grows_the_tokens_kept_per_head_in_proportion(tmp_path, capsys):
  config = _byo(tmp_path, 12)
  config.model.memory.ref_len_fit = 0.9
  config.model.memory.tokens_per_head = 4  # training's selection: 4 of 32 tokens, 10 of 80
  config.bank.tokens_per_head = 6  # the bank's: 6 of 32 tokens, 15 of 80
  fit_ref_len(config)
  memory = config.model.memory
  assert (memory.ref_len, memory.tokens_per_head, config.bank.tokens_per_head) == (80, 10, 15)
  out = capsys.readouterr().out
  assert "model.memory.tokens_per_head 4 -> 10" in out and "bank.tokens_per_head 6 -> 15" in out
  fit_ref_len(config)  # fitted once: unchanged
  assert (memory.tokens_per_head, config.bank.tokens_per_head) == (10, 15)
  (tmp_path / "zero").mkdir()
  zero = _byo(tmp_path / "zero", 12)
  zero.model.memory.ref_len_fit = 0.9
  assert zero.bank.tokens_per_head == 0  # 0 serves training's k, whatever the length
  assert fit_ref_len(zero).bank.tokens_per_head == 0


def test_commands_that_build_a_run_fit_and_those_that_load_one_do_not(tmp_path):
  from m3jax.commands.common import config_from_args

  config = _byo(tmp_path, 12)
  config.model.memory.ref_len_fit = 0.9
  args = argparse.Namespace(config=config, config_overrides=[], default_config=None)
  assert config_from_args(args).model.memory.ref_len == 80
  assert config_from_args(args, fixed_model=True).model.memory.ref_len == 32


def test_ref_len_fit_out_of_range_is_an_error():
  from m3jax.model.config import model_config_from

  config = get_config("tiny")
  config.model.memory.ref_len_fit = 1.5
  with pytest.raises(ValueError, match="memory.ref_len_fit.*must be in"):
    model_config_from(config.model)


def test_fit_prepares_the_data_where_the_run_reads_it(tmp_path):
  """Into data_dir's content-addressed folder (as training does), not data_dir itself."""
  import os

  from m3jax.data.config import data_config_from
  from m3jax.data.prepare import sources_key

  config = _byo(tmp_path, 12)
  config.model.memory.ref_len_fit = 0.9
  root = config.data.data_dir
  key = sources_key(data_config_from(config.data))
  fit_ref_len(config)
  assert config.data.data_dir == os.path.join(root, key)
  assert sorted(os.listdir(root)) == [key]  # nothing prepared in the folder the user named
