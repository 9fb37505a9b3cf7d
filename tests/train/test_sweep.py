"""The sweep runner, end to end on tiny points (a couple of steps each)."""

import json
import os

import pytest

from tests.train.test_config import ROOT
from m3jax.run.sweep import run_sweep

FAST = [
  "--config.train.data_source=synthetic",
  "--config.train.tensorboard=false",
  "--config.train.plot=false",
  "--config.train.progress_bar=false",
  "--config.train.stages.warmup.steps=2",
  "--config.train.stages.continual.steps=2",
  "--config.train.stages.warmup.warmup_steps=1",
  "--config.train.stages.continual.warmup_steps=1",
  "--config.train.checkpoint_every=2",
  "--config.model.num_layers=2",
]


@pytest.mark.integration
def test_two_point_sweep_runs_end_to_end(tmp_path):
  spec = os.path.join(ROOT, "experiments/sweep_encode_grad.py:tiny")
  result = run_sweep(spec, str(tmp_path), extra_overrides=FAST, evaluate=False)
  names = [p["point"] for p in result["points"]]
  assert names == ["encode_grad_on", "encode_grad_off"]
  with open(tmp_path / "summary.json") as f:
    assert json.load(f) == result
  md = (tmp_path / "summary.md").read_text()
  assert "encode_grad_off" in md and "final loss (continual)" in md
  for p in result["points"]:
    assert set(p["final_losses"]) == {"warmup", "continual"}
    assert all(isinstance(v, float) for v in p["final_losses"].values())
    assert (tmp_path / p["point"] / "checkpoints" / "continual" / "2").is_dir()
  # Same stage 1 (same seed, same data): the points differ only in stage 2, so the
  # second point reuses the first one's stage 1 instead of training it again.
  a, b = (p["final_losses"] for p in result["points"])
  assert a["warmup"] == b["warmup"]
  assert [p["first_stage_from"] for p in result["points"]] == [None, "encode_grad_on"]


@pytest.mark.integration
def test_three_point_sweep_trains_stage_one_once_and_summarizes_qa(tmp_path):
  """sweep_tokens_per_head varies k only: stage 1 (no memory) is shared by all three
  points and trains once; every point is evaluated on held-out QA (eval --only qa) and
  the summary has exact match and multiple choice per condition, with n, and the plot."""
  spec = os.path.join(ROOT, "experiments/sweep_tokens_per_head.py:tiny")
  trained = []

  def counting_train(config, workdir):
    from m3jax.train.loop import train

    hook = lambda stage, step: trained.append((os.path.basename(workdir), stage, step))
    return train(config, workdir, hooks=[hook])

  small_eval = [
    f"--config.data.data_dir={tmp_path / 'data'}",
    "--config.eval.num_questions=4",
    "--config.eval.qa_batch_size=4",
    "--config.eval.max_new_tokens=2",
    "--config.eval.conditions=('no_memory', 'memory')",
  ]
  result = run_sweep(
    spec, str(tmp_path / "sweep"), extra_overrides=FAST + small_eval, train_fn=counting_train
  )
  points = result["points"]
  assert len(points) == 3
  warm = [t for t in trained if t[1] == "warmup"]
  assert {t[0] for t in warm} == {points[0]["point"]} and len(warm) == 2  # stage 1 once
  assert len([t for t in trained if t[1] == "continual"]) == 3 * 2  # stage 2 per point
  assert [p["first_stage_from"] for p in points] == [None] + [points[0]["point"]] * 2
  losses = [p["final_losses"]["warmup"] for p in points]
  assert losses[0] == losses[1] == losses[2]
  for p in points:
    assert set(p["qa"]["qa_multiple_choice"]) == {"no_memory", "memory"}
    assert set(p["qa"]["qa_exact_match"]) == {"no_memory", "memory"}
    assert p["qa"]["num_questions"] == 4
  md = (tmp_path / "sweep" / "summary.md").read_text()
  header = next(line for line in md.splitlines() if line.startswith("| point"))
  for col in ("EM no_memory", "EM memory", "MC no_memory", "MC memory", "| n |"):
    assert col in header, (col, header)
  assert "n = 4" in md
  assert os.path.exists(result["plot"])
