"""A preempted training stops the commands that go on after it (demo, sweep).

SIGTERM makes ``train`` save and return ``preempted``; a demo that went on would build a
bank from and evaluate a half-trained model (and ``make demo`` would write its numbers
as the committed results). ``train`` itself is replaced by a fake that reports a
preemption, so these tests run no training.
"""

import os

import pytest

from m3jax import cli
from m3jax.train import loop
from m3jax.train.preempted import PREEMPTED_EXIT, TrainingPreempted, require_finished


def _preempted_summary(workdir):
  return {
    "workdir": workdir,
    "preempted": True,
    "stages": {"warmup": {"latest_checkpoint": os.path.join(workdir, "checkpoints/warmup/3")}},
    "final_losses": {"warmup": 1.0},
    "metrics": os.path.join(workdir, "metrics.jsonl"),
  }


def test_require_finished_passes_a_finished_run_and_names_the_resume():
  done = {**_preempted_summary("/w"), "preempted": False}
  assert require_finished(done) is done
  with pytest.raises(TrainingPreempted, match="warmup/3.*again to resume /w"):
    require_finished(_preempted_summary("/w"))


def test_demo_stops_after_a_preempted_training_and_exits_143(tmp_path, monkeypatch, capsys):
  calls = []

  def fake_train(config, workdir, **kw):
    calls.append(workdir)
    return _preempted_summary(workdir)

  monkeypatch.setattr(loop, "train", fake_train)
  workdir = tmp_path / "run"
  code = cli.main(
    [
      "demo",
      "--config",
      "configs/memory3.py:tiny",
      "--workdir",
      str(workdir),
      f"--config.data.data_dir={tmp_path / 'data'}",
      "--quick",
    ]
  )
  assert code == PREEMPTED_EXIT
  assert calls == [str(workdir)]
  assert "preempted" in capsys.readouterr().err
  # Nothing after training ran: no bank, no results.
  left = os.listdir(workdir) if workdir.exists() else []
  assert not [n for n in left if n.startswith("bank") or n == "eval"], left


def test_sweep_stops_at_the_preempted_point_before_evaluating_it(tmp_path):
  from m3jax.run.sweep import run_sweep

  trained, evaluated = [], []

  def fake_train(config, workdir):
    trained.append(os.path.basename(workdir))
    return _preempted_summary(workdir)

  with pytest.raises(TrainingPreempted):
    run_sweep(
      os.path.join(
        os.path.dirname(__file__), "..", "..", "experiments/sweep_tokens_per_head.py:tiny"
      ),
      str(tmp_path / "sweep"),
      train_fn=fake_train,
      eval_fn=lambda config, workdir: evaluated.append(workdir),
    )
  assert len(trained) == 1 and evaluated == []
