"""Config validation up front and CLI errors: one line naming key, value and what is allowed."""

import os

import pytest

from m3jax import cli
from m3jax.run.config import build, load_config
from m3jax.train.config import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC = os.path.join(ROOT, "configs/memory3.py:tiny")

BAD = [  # (override, the key the error must name, what it must say is allowed)
  ("--config.model.num_layers=2.5", "model.num_layers", "integer"),
  ("--config.train.stages.1.steps=3e0", "train.stages.continual.steps", "integer"),
  ("--config.train.batch_size=0", "train.batch_size", "positive"),
  ("--config.train.stages.warmup.steps=0", "steps", "positive"),
  ("--config.model.memory.memory_layers=(0,9)", "memory_layers", "subset"),
  ("--config.data.seq_len=40", "data.seq_len", "multiple of"),
  ("--config.train.nan_guard=3", "train.nan_guard", "true or false"),
]


@pytest.mark.parametrize("override,key,allowed", BAD, ids=[b[0] for b in BAD])
def test_bad_value_is_one_line_cli_error_before_any_step(
  override, key, allowed, tmp_path, capsys, monkeypatch
):
  steps = []
  import m3jax.train.loop as loop

  monkeypatch.setattr(loop._Run, "run", lambda self: steps.append(1))  # must not be reached
  workdir = tmp_path / "w"
  rc = cli.main(
    [
      "train",
      "--config",
      SPEC,
      override,
      "--workdir",
      str(workdir),
      "--config.train.data_source=synthetic",
    ]
  )
  err = capsys.readouterr().err.strip()
  assert rc == 2 and not steps
  assert len(err.splitlines()) == 1, err
  assert "Traceback" not in err and key in err and allowed in err, err
  assert override.split("=", 1)[1] in err or "0" in err
  assert not (workdir / "checkpoints").exists()


def test_debug_shows_the_traceback(tmp_path):
  with pytest.raises(ConfigError, match="model.num_layers"):
    cli.main(
      [
        "train",
        "--debug",
        "--config",
        SPEC,
        "--config.model.num_layers=2.5",
        "--workdir",
        str(tmp_path),
      ]
    )


def test_python_set_wrong_type_is_caught_by_build():
  c = load_config(SPEC)
  with c.model.ignore_type():
    c.model.num_layers = 2.5
  with pytest.raises(ConfigError, match=r"config.model.num_layers=2.5: expected an integer"):
    build(c)


def test_total_steps_rescales_every_stage():
  run = build(load_config(SPEC, ["--config.train.total_steps=4"]))
  assert [s.steps for s in run.train.stages] == [2, 2]
  assert all(s.warmup_steps <= max(1, s.steps // 5) for s in run.train.stages)


def test_subcommand_help_describes_each_flag_and_default(capsys):
  with pytest.raises(SystemExit):
    cli.main(["eval", "--help"])
  out = capsys.readouterr().out
  for flag in ("--workdir", "--bank", "--qa", "--results", "--plots", "--config"):
    assert flag in out
  assert "default:" in out and "--config.KEY=VALUE" in out


def test_defaults_live_in_the_dataclasses():
  """Config sections are built from the dataclass defaults; only variant sizes differ."""
  from m3jax.evaluate.report import EvalConfig
  from m3jax.memory.build import BankConfig

  c = load_config(SPEC)
  assert c.bank.embedder == BankConfig().embedder == "sparse_tfidf"
  assert c.eval.max_new_tokens == EvalConfig().max_new_tokens
  assert "anti_copy_threshold" not in c.bank and "eval_overlap_threshold" not in c.data
  assert c.train.tensorboard and c.train.plot and c.train.progress_bar  # on in tiny too


def test_a_saved_config_from_an_older_release_takes_new_serving_fields(tmp_path):
  """A workdir's config.json predating a bank/eval field reads it at its default and
  accepts an override of it; a model field it lacks stays an unknown key."""
  import argparse
  import json

  from m3jax.commands.common import config_from_args
  from m3jax.run.config import to_json

  saved = json.loads(to_json(load_config("configs/memory3.py:tiny", [])))
  del saved["bank"]["tokens_per_head"], saved["eval"]["num_questions"]
  del saved["model"]["init_std"]
  (tmp_path / "config.json").write_text(json.dumps(saved))

  def args(*overrides):
    return argparse.Namespace(config=None, config_overrides=list(overrides), default_config=None)

  config = config_from_args(args(), workdir=str(tmp_path))
  assert config.bank.tokens_per_head == 0 and config.eval.num_questions > 0
  config = config_from_args(args("--config.bank.tokens_per_head=8"), workdir=str(tmp_path))
  assert build(config).bank.tokens_per_head == 8
  with pytest.raises(ConfigError, match="init_std"):
    config_from_args(args("--config.model.init_std=0.1"), workdir=str(tmp_path))
