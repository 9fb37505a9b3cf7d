"""bench_train's FLOP counts reproduce SPEC App. A's numbers for the paper shape."""

import os

import pytest

from m3jax.run.config import load_config
from m3jax.model.config import model_config_from
from tests.train.test_config import ROOT


def test_flops_match_appendix_a():
  from experiments.bench_train import flops_encode, flops_memory_read, flops_stage1

  cfg = model_config_from(load_config(os.path.join(ROOT, "configs/memory3.py:paper_2p4b")).model)
  # Implicit write of one 128-token knowledge = its share of a 2048-token training step.
  assert flops_stage1(cfg, 2048) * 128 / 2048 / 1e12 == pytest.approx(2.24, abs=0.005)
  # Explicit write of one reference (one chunk's reference, no backward).
  assert flops_encode(cfg, cfg.memory.chunk_len, grad=False) / 1e12 == pytest.approx(
    0.308, abs=0.0005
  )
  # The read is tiny next to the step (App. A: 1.44e-4 TFLOPs per chunk and memory).
  assert flops_memory_read(cfg, 2048) < 0.01 * flops_stage1(cfg, 2048)
