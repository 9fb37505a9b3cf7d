"""Evaluation during training: held-out loss with and without memory every eval_every steps."""

import pytest
import json

import jax
import numpy as np

from m3jax.train.loop import train
from tests.train.conftest import tiny_config


@pytest.mark.integration
def test_eval_every_logs_held_out_loss_with_and_without_memory(tmp_path):
  config = tiny_config(shallow=True, checkpoint_every=100, eval_every=2, eval_batches=1)
  config.train.stages.warmup["steps"] = 2
  config.train.stages.continual["steps"] = 4
  seen = []

  def evaluator(params):  # what the commands inject (QA multiple choice, m3jax.run.training_eval)
    total = float(sum(np.abs(np.asarray(x)).sum() for x in jax.tree_util.tree_leaves(params)))
    seen.append(total)
    return {"injected_param_norm": total, "injected_n": 3}

  train(config, str(tmp_path), evaluators=[evaluator])
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
  # Injected evaluators see the current params and join the same record.
  assert [r["injected_param_norm"] for r in recs] == seen and len(set(seen)) == 3
  assert all(r["injected_n"] == 3 for r in recs)
  # Training records are untouched by evaluation (one per step).
  steps = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert len(steps) == 6


def test_held_out_batches_shrink_to_a_small_valid_split(tmp_path):
  # A bring-your-own corpus had 4 held-out sequences for a batch of 16: the run died at
  # its first eval_every, after 100 steps of training. Evaluate on what there is.
  from m3jax.model.config import model_config_from
  from m3jax.train.periodic_eval import HeldOutLoss

  config = tiny_config(shallow=True)
  config.train.data_source = "pipeline"
  config.data.data_dir = str(tmp_path / "data")
  cfg = model_config_from(config.model)
  seq_len = int(config.data.seq_len)
  ho = HeldOutLoss(config, cfg, seq_len=seq_len, batch_size=100_000, num_batches=2)
  from m3jax.data.pipeline import data_paths

  valid_seqs = len(np.load(data_paths(config.data).tokens("valid"))) // seq_len
  assert 0 < ho.batch_size == valid_seqs < 100_000
  assert len(ho.batches) == 1 and ho.batches[0]["inputs"].shape == (ho.batch_size, seq_len)
