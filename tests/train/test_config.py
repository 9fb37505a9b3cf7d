"""Config loading, overrides, stage validation, and every sweep point building."""

import glob
import os

import jax
import jax.numpy as jnp
import pytest

from m3jax.run.config import load_config
from m3jax.model.config import model_config_from
from m3jax.model.transformer import Transformer
from m3jax.train.loop import resolve_seq_len
from m3jax.train.optimizer import make_optimizer, schedule
from m3jax.train.config import train_config_from
from m3jax.train.stages import stage_from, stages_from
from m3jax.run.sweep import sweep_points

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC = os.path.join(ROOT, "configs/memory3.py:tiny")


def test_overrides_are_parsed_and_typed():
  c = load_config(
    SPEC,
    [
      "--config.model.num_layers=8",
      "--config.train.nan_guard=false",
      "--config.train.stages.1.peak_lr=2e-4",
      "--config.train.stages.warmup.steps",
      "9",
      "--config.model.memory.memory_layers=(0, 1, 2)",
    ],
  )
  assert c.model.num_layers == 8 and c.train.nan_guard is False
  assert c.train.stages.continual.peak_lr == 2e-4  # index 1 = the second stage by name
  assert c.train.stages.warmup.steps == 9
  assert c.model.memory.memory_layers == (0, 1, 2)
  model_config_from(c.model)  # still a valid model


def test_unknown_key_lists_close_matches():
  with pytest.raises(ValueError, match=r"num_layers"):
    load_config(SPEC, ["--config.model.num_layer=8"])
  with pytest.raises(ValueError, match=r"peak_lr"):
    load_config(SPEC, ["--config.train.stages.1.peak_rl=1"])
  with pytest.raises(ValueError, match="expected an integer"):
    load_config(SPEC, ["--config.model.num_layers=eight"])


def test_config_is_locked():
  c = load_config(SPEC)
  with pytest.raises(AttributeError):
    c.model.num_layer = 3


def test_stage_validation():
  good = dict(name="s", steps=10, peak_lr=1e-3)
  assert stage_from(good).schedule == "wsd"
  with pytest.raises(ValueError, match=r"unknown keys \['peak_rl'\].*valid keys"):
    stage_from({**good, "peak_rl": 1})
  with pytest.raises(ValueError, match="schedule"):
    stage_from({**good, "schedule": "linear"})
  with pytest.raises(ValueError, match="cannot init_from='previous'"):
    stages_from([{**good, "init_from": "previous"}])
  with pytest.raises(ValueError, match="memory_layers is empty"):
    stages_from([{**good, "use_memory": True}], has_memory_layers=False)


def test_wsd_schedule_shape():
  s = stage_from(dict(name="s", steps=100, peak_lr=1.0, warmup_steps=10))
  lr = schedule(s)
  assert float(lr(0)) == 0.0 and float(lr(10)) == pytest.approx(1.0)
  assert float(lr(89)) == pytest.approx(1.0)  # flat until the last 10%
  assert float(lr(99)) < 0.2 and float(lr(100)) == pytest.approx(0.01)
  cos = schedule(stage_from(dict(name="c", steps=100, peak_lr=1.0, schedule="cosine")))
  assert float(cos(0)) == pytest.approx(1.0) and float(cos(100)) == pytest.approx(0.01)


def test_weight_decay_mask_skips_norms_and_embeddings():
  from m3jax.train.optimizer import _decay_mask

  c = load_config(SPEC)
  params = jax.eval_shape(
    Transformer(model_config_from(c.model)).init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32)
  )["params"]
  mask = _decay_mask(params)
  flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(mask)}
  assert not any(v for k, v in flat.items() if "scale" in k or "embed" in k)
  assert all(v for k, v in flat.items() if "'q'" in k or "lm_head" in k)


def test_seq_len_comes_from_data_section():
  c = load_config(SPEC, ["--config.data.seq_len=48"])
  assert resolve_seq_len(c) == 48


SWEEPS = sorted(glob.glob(os.path.join(ROOT, "experiments", "sweep_*.py")))


@pytest.mark.parametrize("path", SWEEPS, ids=os.path.basename)
@pytest.mark.parametrize("variant", ["tiny", "small"])
def test_every_sweep_point_builds(path, variant):
  points = sweep_points(f"{path}:{variant}")
  assert len(points) >= 2
  for name, config in points:
    cfg = model_config_from(config.model)
    stages = train_config_from(
      config.train, has_memory_layers=bool(cfg.memory.memory_layers)
    ).stages
    for stage in stages:
      make_optimizer(config.train)
    shapes = jax.eval_shape(
      Transformer(cfg).init, jax.random.key(0), jnp.zeros((1, resolve_seq_len(config)), jnp.int32)
    )
    assert shapes["params"]["lm_head"].value.shape[-1] == cfg.vocab_size, name


def test_paper_config_train_section_builds():
  c = load_config(os.path.join(ROOT, "configs/memory3.py:paper_2p4b"))
  cfg = model_config_from(c.model)
  stages = train_config_from(c.train).stages
  assert [s.use_memory for s in stages] == [False, True]
  assert stages[1].peak_lr < stages[0].peak_lr and stages[1].init_from == "previous"
  assert resolve_seq_len(c) % cfg.memory.chunk_len == 0
