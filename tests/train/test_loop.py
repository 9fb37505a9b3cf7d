"""The loop: resume after a crash (and a torn metrics line) is bitwise, the NaN guard, the
stage handoff."""

import os

import jax
import numpy as np
import pytest

from m3jax.model.config import model_config_from
from m3jax.train.checkpoint import Checkpointer
from m3jax.train.data_source import make_iterator
from m3jax.train.loop import NonFiniteLossError, make_mesh_from, train
from m3jax.train.metrics import read_jsonl
from m3jax.train.optimizer import make_optimizer
from m3jax.train.config import train_config_from
from m3jax.train.state import abstract_state
from tests.train.conftest import tiny_config


class Crash(RuntimeError):
  pass


def crash_at(stage_name, step):
  def hook(name, s):
    if (name, s) == (stage_name, step):
      raise Crash(f"simulated crash at {name}:{s}")

  return hook


def losses(workdir):
  return [
    (r["stage"], r["step"], r["loss"]) for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  ]


@pytest.mark.integration
def test_resume_after_kill_is_bitwise(tmp_path):
  config = tiny_config(shallow=True, checkpoint_every=2)
  reference = train(config, str(tmp_path / "straight"))
  expected = losses(str(tmp_path / "straight"))
  assert [(n, s) for n, s, _ in expected] == (
    [("warmup", i) for i in range(1, 7)] + [("continual", i) for i in range(1, 7)]
  )

  crashed = str(tmp_path / "crashed")
  with pytest.raises(Crash):  # mid stage 1, between checkpoints 4 and 6
    train(config, crashed, hooks=[crash_at("warmup", 5)])
  with pytest.raises(Crash):  # mid stage 2
    train(config, crashed, hooks=[crash_at("continual", 3)])
  with open(os.path.join(crashed, "metrics.jsonl"), "a") as f:
    f.write('{"stage": "continual", "step": 3, "lo')  # a kill in the middle of a write
  summary = train(config, crashed)
  got = losses(crashed)
  # float32 on CPU with the same shapes and batches: resumed == uninterrupted, bitwise.
  assert got == expected
  assert summary["final_losses"] == reference["final_losses"]


def _nan_factory(bad_step):
  """The synthetic source, with a NaN loss mask in batch ``bad_step`` of stage 1."""

  def factory(config, stage, **kw):
    it = make_iterator(config, stage, **kw)

    class Poisoned:
      def __iter__(self):
        return self

      def __next__(self):
        batch = next(it)
        if stage.name == "warmup" and it.index == bad_step:
          batch["loss_mask"] = batch["loss_mask"] * np.nan
        return batch

      state, restore = it.state, it.restore

    return Poisoned()

  return factory


@pytest.mark.integration
def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path):
  config = tiny_config(shallow=True, checkpoint_every=2)
  with pytest.raises(NonFiniteLossError, match="step 5"):
    train(config, str(tmp_path), data_factory=_nan_factory(5))
  ckpt_dir = tmp_path / "checkpoints" / "warmup"
  ckpt = Checkpointer(str(ckpt_dir), async_save=False)
  assert ckpt.latest_step() == 4, "the bad state must not be saved"
  cfg = model_config_from(config.model)
  mesh, rules = make_mesh_from(config)
  state, data_state, meta = ckpt.restore(
    abstract_state(cfg, make_optimizer(config.train), mesh, rules)
  )
  ckpt.close()
  assert data_state == {"index": 4} and meta["stage"] == "warmup" and meta["step"] == 4
  assert all(
    bool(np.isfinite(np.asarray(x)).all()) for x in jax.tree_util.tree_leaves(state.params)
  )
  assert not (tmp_path / "checkpoints" / "continual").exists()


def test_checkpoint_global_keeps_checkpoints_at_run_steps(tmp_path):
  # Every 2 steps of the whole run (3 + 3): global steps 2, 4, 6 and each stage's end,
  # so the continual stage keeps its steps 1 and 3, not 2 and 3.
  config = tiny_config(shallow=True, checkpoint_every=2, checkpoint_global=True, max_to_keep=10)
  config.train.stages.warmup["steps"] = 3
  config.train.stages.continual["steps"] = 3
  train(config, str(tmp_path))
  kept = {}
  for stage in ("warmup", "continual"):
    ckpt = Checkpointer(str(tmp_path / "checkpoints" / stage), async_save=False)
    kept[stage] = sorted(ckpt.all_steps())
    ckpt.close()
  assert kept == {"warmup": [2, 3], "continual": [1, 3]}


@pytest.mark.integration
def test_stage_handoff_loads_params_and_resets_optimizer(tmp_path):
  config = tiny_config(shallow=True, checkpoint_every=100)
  config.train.stages.warmup["steps"] = 4
  config.train.stages.continual["steps"] = 2
  config.train.stages.continual["peak_lr"] = 0.0  # stage 2 leaves params untouched ...
  train(config, str(tmp_path))
  cfg = model_config_from(config.model)
  mesh, rules = make_mesh_from(config)
  stages = train_config_from(config.train).stages
  out = {}
  for stage in stages:
    ckpt = Checkpointer(str(tmp_path / "checkpoints" / stage.name), async_save=False)
    out[stage.name] = ckpt.restore(abstract_state(cfg, make_optimizer(config.train), mesh, rules))
    ckpt.close()
  warm, cont = out["warmup"][0], out["continual"][0]
  # ... so its params are exactly stage 1's last checkpoint,
  jax.tree_util.tree_map(np.testing.assert_array_equal, cont.params, warm.params)
  # while its optimizer restarted: Adam's step count is 2 (not 4 + 2), its step is 2.
  counts = lambda s: sorted(
    {int(x) for x in jax.tree_util.tree_leaves(s.opt_state) if np.ndim(x) == 0}
  )
  assert counts(warm) == [4] and counts(cont) == [2]
  assert int(cont.step) == 2 and out["continual"][2]["stage"] == "continual"
  # Stage 2's records carry the memory mass of each memory layer; stage 1's none.
  recs = read_jsonl(str(tmp_path / "metrics.jsonl"))
  assert all(
    len(r["memory_mass"]) == len(cfg.memory.memory_layers)
    for r in recs
    if r["stage"] == "continual"
  )
  assert all(r["memory_mass"] == [] for r in recs if r["stage"] == "warmup")


@pytest.mark.integration
def test_sigterm_saves_and_exits_cleanly_then_resumes(tmp_path):
  import signal

  config = tiny_config(shallow=True, checkpoint_every=2)

  def preempt(name, step):
    if (name, step) == ("warmup", 3):
      os.kill(os.getpid(), signal.SIGTERM)  # what a preempting scheduler sends

  summary = train(config, str(tmp_path), hooks=[preempt])
  assert summary["preempted"] and summary["stages"]["warmup"]["preempted"]
  assert summary["stages"]["warmup"]["latest_checkpoint"].endswith("/3")  # saved off-cadence
  assert "continual" not in summary["stages"]
  resumed = train(config, str(tmp_path))
  assert not resumed["preempted"]
  assert [(n, s) for n, s, _ in losses(str(tmp_path))] == (
    [("warmup", i) for i in range(1, 7)] + [("continual", i) for i in range(1, 7)]
  )
