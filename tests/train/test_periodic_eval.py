"""Evaluation during training: held-out loss with and without memory every eval_every steps."""

import pytest
import json

import numpy as np

from m3jax.train.loop import train
from tests.train.conftest import tiny_config


@pytest.mark.integration
def test_eval_every_logs_held_out_loss_with_and_without_memory(tmp_path):
  config = tiny_config(shallow=True, checkpoint_every=100, eval_every=2, eval_batches=1)
  config.train.stages.warmup["steps"] = 2
  config.train.stages.continual["steps"] = 4
  train(config, str(tmp_path))
  lines = (tmp_path / "eval_metrics.jsonl").read_text().splitlines()
  recs = [json.loads(line) for line in lines]
  assert [(r["stage"], r["step"], r["global_step"]) for r in recs] == [
    ("warmup", 2, 2),
    ("continual", 2, 4),
    ("continual", 4, 6),
  ]
  for r in recs:
    assert np.isfinite(r["held_out_loss_no_memory"]) and np.isfinite(r["held_out_loss_memory"])
  # The same rows each time: the no-memory loss changes only because the params do.
  assert recs[1]["held_out_loss_no_memory"] != recs[2]["held_out_loss_no_memory"]
  # Training records are untouched by evaluation (one per step).
  steps = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert len(steps) == 6
