"""Shared tiny data set for the data tests: prepared once per session (about 2 s)."""

import numpy as np
import pytest

from configs.memory3 import get_config
from m3jax.model.config import model_config_from


def tiny_data_cfg(data_dir, **overrides):
  cfg = get_config("tiny").data
  cfg.data_dir = str(data_dir)
  for key, value in overrides.items():  # "a.b" names a nested field
    *parents, leaf = key.split(".")
    node = cfg
    for part in parents:
      node = node[part]
    node[leaf] = value
  return cfg


@pytest.fixture(scope="session")
def tiny_model_cfg():
  return model_config_from(get_config("tiny").model)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
  from m3jax.data.prepare import prepare_data

  cfg = tiny_data_cfg(tmp_path_factory.mktemp("tiny_data"))
  return cfg, prepare_data(cfg)


def assert_resumable_and_training_only(make):
  """``make(rate, split)`` builds an iterator with a training-only row transform at
  ``rate``: a restored iterator builds the same second batch, and held-out batches are
  the same at rate 0 and 1."""
  it = make(1.0)
  next(it)
  expected = next(it)
  again = make(1.0)
  again.restore({"epoch": 0, "step": 1})
  got = next(again)
  for key in expected:
    np.testing.assert_array_equal(got[key], expected[key])
  v0, v1 = next(make(0.0, "valid")), next(make(1.0, "valid"))
  for key in v0:
    np.testing.assert_array_equal(v0[key], v1[key])
