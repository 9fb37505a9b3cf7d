"""Shared tiny data set for the data tests: prepared once per session (about 2 s)."""

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
