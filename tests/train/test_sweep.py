"""The sweep runner, end to end on two tiny points (a couple of steps each)."""

import json
import os

import pytest

from tests.train.test_config import ROOT
from m3jax.train.sweep import run_sweep

FAST = ["--config.train.data_source=synthetic", "--config.train.tensorboard=false",
        "--config.train.plot=false", "--config.train.progress_bar=false",
        "--config.train.stages.0.steps=2", "--config.train.stages.1.steps=2",
        "--config.train.stages.0.warmup_steps=1", "--config.train.stages.1.warmup_steps=1",
        "--config.train.checkpoint_every=2", "--config.model.num_layers=2"]


@pytest.mark.integration
def test_two_point_sweep_runs_end_to_end(tmp_path):
  spec = os.path.join(ROOT, "experiments/sweep_encode_grad.py:tiny")
  result = run_sweep(spec, str(tmp_path), extra_overrides=FAST)
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
  # Same stage 1 (same seed, same data): the points differ only in stage 2.
  a, b = (p["final_losses"] for p in result["points"])
  assert a["warmup"] == b["warmup"]
