"""``m3jax reproduce`` on the tiny config: both runs train the same tokens, every kept
checkpoint is evaluated once (a rerun resumes and adds nothing), curves are plotted."""

import json
import os

import pytest

from m3jax.run import reproduce
from m3jax.run.config import load_config


def _config(tmp_path):
  c = load_config("configs/memory3.py:tiny", [])
  c.data.data_dir = str(tmp_path / "data")
  c.train.tensorboard = c.train.progress_bar = c.train.plot = False
  for stage in c.train.stages.values():
    stage["steps"], stage["warmup_steps"] = 2, 1
  c.eval.qa_batch_size = 4
  c.eval.max_new_tokens = 2
  return c


def _reproduce(config, tmp_path, eval_every, **kw):
  """A quiet tiny reproduce run into tmp_path/runs and tmp_path/out."""
  return reproduce.reproduce(
    config,
    str(tmp_path / "runs"),
    str(tmp_path / "out"),
    scale=1.0,
    eval_every=eval_every,
    num_questions=4,
    progress=False,
    **kw,
  )


def test_plan_keeps_tokens_equal():
  c = load_config("configs/memory3.py:small", [])
  runs = reproduce.plan(c, 3.0)
  two, scratch = runs["two_stage"].train, runs["from_scratch"].train
  assert two.stages.continual["steps"] == 3 * c.train.stages.continual.steps
  assert two.stages.warmup["steps"] == c.train.stages.warmup.steps
  assert list(scratch.stage_order) == ["scratch"]
  assert scratch.stages.scratch["steps"] == sum(two.stages[s]["steps"] for s in two.stage_order)
  assert scratch.stages.scratch["use_memory"] and scratch.stages.scratch["init_from"] == ""
  # eight evaluated checkpoints per run by default: small is 200 + 3 x 3500 steps
  total = c.train.stages.warmup.steps + 3 * c.train.stages.continual.steps
  assert reproduce.default_eval_every(runs) == round(total / 8)


@pytest.mark.integration
def test_reproduce_tiny_resumes_and_plots(tmp_path):
  config = _config(tmp_path)
  out = tmp_path / "out"
  summary = _reproduce(config, tmp_path, 2)
  rows = [json.loads(line) for line in open(out / "curves.jsonl")]
  # two_stage: warmup/2 and continual/2; from_scratch: scratch/2 and scratch/4.
  assert sorted((r["run"], r["stage"], r["step"]) for r in rows) == [
    ("from_scratch", "scratch", 2),
    ("from_scratch", "scratch", 4),
    ("two_stage", "continual", 2),
    ("two_stage", "warmup", 2),
  ]
  last = {r["run"]: r for r in rows if r["global_step"] == 4}
  assert last["two_stage"]["tokens"] == last["from_scratch"]["tokens"] > 0
  for r in rows:
    assert set(r["qa_multiple_choice"]) == set(reproduce.CONDITIONS)
  assert set(summary["fig11_equal_tokens"]["memory_multiple_choice"]) == {
    "two_stage",
    "from_scratch",
  }
  assert os.path.exists(summary["plot"])
  assert not [
    p for p in os.listdir(tmp_path / "runs" / "two_stage" / "curve-banks") if p != "plots"
  ], "evaluated banks are removed"
  _reproduce(config, tmp_path, 2)
  assert len(open(out / "curves.jsonl").readlines()) == len(rows)


def test_unknown_run_name_is_refused_before_training(tmp_path):
  with pytest.raises(ValueError, match="unknown runs.*from_scratch"):
    reproduce.reproduce(
      _config(tmp_path), str(tmp_path / "runs"), str(tmp_path / "out"), runs=("scratch",)
    )
  assert not os.path.exists(tmp_path / "runs")


@pytest.mark.integration
def test_one_arm_alone_keeps_the_other_arms_rows(tmp_path):
  """``runs=("from_scratch",)`` trains only that arm; rows of the other already in
  curves.jsonl (an earlier run's) stay and enter the Fig. 11 summary."""
  config = _config(tmp_path)
  out = tmp_path / "out"
  out.mkdir()
  earlier = dict(
    run="two_stage",
    stage="continual",
    step=2,
    global_step=4,
    tokens=4 * config.train.batch_size * config.data.seq_len,
    qa_exact_match={c: 0.5 for c in reproduce.CONDITIONS},
    qa_multiple_choice={c: 0.75 for c in reproduce.CONDITIONS},
    qa_by_kind={},
  )
  (out / "curves.jsonl").write_text(json.dumps(earlier) + "\n")
  summary = _reproduce(config, tmp_path, 4, runs=("from_scratch",))
  assert os.listdir(tmp_path / "runs") == ["from_scratch"]
  rows = [json.loads(line) for line in open(out / "curves.jsonl")]
  assert [(r["run"], r["step"]) for r in rows] == [("two_stage", 2), ("from_scratch", 4)]
  assert summary["fig11_equal_tokens"]["memory_multiple_choice"]["two_stage"] == 0.75
  # Evaluating only (a run stopped early): no training, nothing new to measure here.
  before = sorted(os.listdir(tmp_path / "runs" / "from_scratch" / "checkpoints" / "scratch"))
  again = _reproduce(config, tmp_path, 4, runs=("from_scratch",), train_runs=False)
  after = sorted(os.listdir(tmp_path / "runs" / "from_scratch" / "checkpoints" / "scratch"))
  assert after == before and len(open(out / "curves.jsonl").readlines()) == 2
  assert again["fig11_equal_tokens"] == summary["fig11_equal_tokens"]


def test_evaluating_without_training_needs_a_trained_run(tmp_path):
  with pytest.raises(FileNotFoundError, match="no trained run"):
    reproduce.reproduce(
      _config(tmp_path),
      str(tmp_path / "runs"),
      str(tmp_path / "out"),
      runs=("from_scratch",),
      train_runs=False,
    )


def _row(run, tokens, mc):
  return dict(
    run=run,
    stage="s",
    step=tokens,
    global_step=tokens,
    tokens=tokens,
    qa_exact_match={c: mc / 2 for c in reproduce.CONDITIONS},
    qa_multiple_choice={c: mc for c in reproduce.CONDITIONS},
    qa_by_kind={},
  )


def test_fig11_compares_the_runs_at_equal_tokens():
  """A from-scratch arm stopped early is compared where both were evaluated (nearest
  two-stage point within 10% of its tokens), never its last point against the other's."""
  rows = [_row("two_stage", t, t / 100) for t in (20, 120, 220, 320, 420)]
  rows += [_row("from_scratch", t, t / 200) for t in (5, 100, 200, 300)]
  fig = reproduce.summarize(rows)["fig11_equal_tokens"]
  # 5 has no two-stage point within 10% (nearest 20); 100 pairs with 120? no (20% off).
  assert [p["tokens"] for p in fig["curve"]] == [
    {"two_stage": 220, "from_scratch": 200},
    {"two_stage": 320, "from_scratch": 300},
  ]
  assert fig["tokens"] == {"two_stage": 320, "from_scratch": 300}
  assert fig["memory_multiple_choice"] == {"two_stage": 3.2, "from_scratch": 1.5}
  assert reproduce.summarize(rows)["final"]["two_stage"]["tokens"] == 420
  assert "fig11_equal_tokens" not in reproduce.summarize(rows[:5])
