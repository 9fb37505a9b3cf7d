"""Shared small fixtures for the memory tests: the tiny model, random params, a toy KB."""

import jax
import jax.numpy as jnp
import pytest

from configs.memory3 import get_config
from m3jax.model.config import model_config_from
from m3jax.model.transformer import Transformer

from tests.memory.helpers import WordTokenizer


@pytest.fixture(scope="session")
def tiny_cfg():
  return model_config_from(get_config("tiny").model)


@pytest.fixture(scope="session")
def tiny_params(tiny_cfg):
  model = Transformer(tiny_cfg)
  return jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"]


@pytest.fixture
def word_tok():
  return WordTokenizer()
