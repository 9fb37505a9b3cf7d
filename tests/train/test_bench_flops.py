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


@pytest.mark.parametrize(
  "impl,remat,calls_per_layer,matmuls",
  [
    ("splash", "none", 3, 2 + 7),  # forward, dq, dkv
    ("splash", "dots_except_attention", 4, 2 * 2 + 7),  # + the forward again
    ("splash", "dots_attention_out", 4, 2 * 2 + 7),  # splash names no outputs to keep
    ("flash", "dots_except_attention", 3, 2 * 2 + 5),  # forward twice, one fused backward
    ("flash", "dots_attention_out", 2, 2 + 5),  # outputs kept: the forward once
    ("dense", "dots_attention_out", 0, 0),  # XLA attention: no kernel
  ],
)
def test_kernel_calls_and_flops_per_policy(impl, remat, calls_per_layer, matmuls):
  """Stage 1 of a 3-layer model at T = 256: every layer's kernel call visits 3 tiles of
  128 x 128 (the causal diagonal after the sink is merged out: tiles (0,0), (1,0), (1,1))."""
  import dataclasses

  from m3jax.model.config import ModelConfig
  from m3jax.train import flops

  cfg = ModelConfig(
    vocab_size=50, num_layers=3, num_heads=4, num_kv_heads=2, head_dim=8, embed_dim=32, mlp_dim=64
  )
  cfg = dataclasses.replace(cfg, attention_impl=impl)
  got = flops.attention_kernels(cfg, 256, 2, use_memory=False, remat=remat, microbatches=2)
  assert got["calls"] == 3 * calls_per_layer * 2
  pairs = 3 * 128 * 128
  assert got["flops"] == 3 * pairs * matmuls * 2 * (4 * 8) * 2  # layers, batch 2
