"""Prepare the data (sources, vocabulary, tokens, embedder, pre-retrieval) ahead of training.

  python -m m3jax prepare --config configs/memory3.py:small [--config.x=y ...]

Idempotent: a second run with the same inputs does nothing (see docs/data.md).
"""

from __future__ import annotations


def add_arguments(parser) -> None:
  from m3jax.commands.common import add_config_arguments

  add_config_arguments(parser, default="configs/memory3.py:small")


def run(args) -> int:
  from m3jax.commands.common import config_from_args
  from m3jax.data.pipeline import prepare_for_training
  from m3jax.model.config import model_config_from

  config = config_from_args(args)
  paths = prepare_for_training(config.data, model_config_from(config.model))
  with open(paths.manifest) as f:
    print(f"{paths.data_dir}: {f.read()}")
  return 0
