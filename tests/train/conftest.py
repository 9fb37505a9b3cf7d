"""Shared fixtures for the training tests: the tiny config on synthetic data."""

import pytest

from configs.memory3 import get_config


def tiny_config(shallow: bool = False, **train):
  """The tiny config, synthetic batches, no TensorBoard/plot/progress bar (fast).

  ``shallow``: 2 layers (both memory layers) instead of 4, for loop tests whose
  behaviour does not depend on depth; halves XLA compile time on 2 CPU cores.
  """
  c = get_config("tiny")
  if shallow:
    c.model.num_layers = 2
  c.train.data_source = "synthetic"
  c.train.tensorboard = False
  c.train.plot = False
  c.train.progress_bar = False
  for k, v in train.items():
    c.train[k] = v
  return c


@pytest.fixture
def config():
  return tiny_config()
