"""QA multiple choice during training (train.eval_every), on the tiny config's real data."""

import json
import os

import numpy as np
import pytest

from m3jax.run.config import from_json, load_config
from m3jax.run.training_eval import TrainingQA, training_evaluators

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC = os.path.join(ROOT, "configs/memory3.py:tiny")


def test_evaluators_only_where_they_apply():
  assert training_evaluators(load_config(SPEC)) == []  # tiny: eval_every=0
  on = load_config(SPEC, ["--config.train.eval_every=2"])
  assert [type(e) for e in training_evaluators(on)] == [TrainingQA]
  assert on.train.eval_qa_questions == 32  # the default
  off = load_config(SPEC, ["--config.train.eval_every=2", "--config.train.eval_qa_questions=0"])
  assert training_evaluators(off) == []
  synthetic = load_config(
    SPEC, ["--config.train.eval_every=2", "--config.train.data_source=synthetic"]
  )
  assert training_evaluators(synthetic) == []


@pytest.mark.integration
def test_eval_every_logs_qa_multiple_choice_of_the_current_params(tmp_path):
  """Both stages log MC with and without memory beside the held-out loss; memories are
  encoded live by the params of that step (the last record equals ``eval --only qa`` on a
  bank built from the final checkpoint), and only the references retrieved are encoded."""
  from m3jax.evaluate import evaluation, report
  from m3jax.run.loading import load_trained_run
  from m3jax.train.loop import train

  n = 8
  config = load_config(
    SPEC,
    [
      f"--config.data.data_dir={tmp_path / 'data'}",
      "--config.train.stages.warmup.steps=2",
      "--config.train.stages.continual.steps=2",
      "--config.train.stages.warmup.warmup_steps=1",
      "--config.train.stages.continual.warmup_steps=1",
      "--config.train.checkpoint_every=2",
      "--config.train.eval_every=2",
      "--config.train.eval_batches=1",
      f"--config.train.eval_qa_questions={n}",
      f"--config.eval.num_questions={n}",
      "--config.eval.conditions=('no_memory', 'memory')",
      "--config.train.tensorboard=false",
      "--config.train.progress_bar=false",
      "--config.train.plot=false",
    ],
  )
  work = str(tmp_path / "w")
  evaluators = training_evaluators(config)
  train(config, work, evaluators=evaluators)
  recs = [json.loads(x) for x in open(os.path.join(work, "eval_metrics.jsonl"))]
  assert [(r["stage"], r["step"], r["global_step"]) for r in recs] == [
    ("warmup", 2, 2),
    ("continual", 2, 4),
  ]
  for r in recs:
    assert r["qa_mc_n"] == n and r["qa_mc_chance"] == pytest.approx(0.25)
    assert 0 <= r["qa_mc_no_memory"] <= 1 and 0 <= r["qa_mc_memory"] <= 1
    assert np.isfinite(r["held_out_loss_memory"])  # the same record as the held-out loss
  qa = evaluators[0]
  refs_encoded = qa.bank.encoded
  assert 0 < refs_encoded < 2 * n * config.model.memory.refs_per_chunk + 1  # not the KB

  # The same questions on a bank built from the final checkpoint give the same numbers.
  with open(os.path.join(work, "config.json")) as f:
    saved = from_json(f.read())
  t = load_trained_run(saved, work, progress=False)
  ev = report.eval_config_from(saved.get("eval"))
  res = evaluation.evaluate_all(
    t.cfg,
    t.params,
    t.vocab,
    t.paths,
    t.refs,
    t.bank,
    t.embedder,
    t.retriever,
    ev,
    plot_dir=str(tmp_path / "plots"),
    progress=False,
    only=("qa",),
  )
  assert res["num_questions"] == n
  assert res["qa_multiple_choice"] == {
    "no_memory": recs[-1]["qa_mc_no_memory"],
    "memory": recs[-1]["qa_mc_memory"],
  }
  # The live memories are the built bank's rows (same params, same bf16 storage).
  ids = [r.id for r in t.refs[:5]]
  live = qa.bank.read(ids)
  built = t.bank.read(ids)
  np.testing.assert_array_equal(live.mask, built.mask)
  np.testing.assert_allclose(np.float32(live.keys), np.float32(built.keys), rtol=1e-2, atol=1e-2)
