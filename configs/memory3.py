"""Memory³ run config: ``get_config("tiny" | "small" | "paper_2p4b")``.

tiny:        CPU unit tests (seconds).
small:       the CPU demo (4 layers, d=128): trains a few million tokens in minutes.
small_paper: small's width with the paper's memory layout (first half of 8 layers, 5
             references per chunk, 8 tokens per head), trained with the exit loss
             after its last memory layer (train.memory_exit_loss=1).
paper_2p4b:  the paper's 2.4B shape (L=44, H=40, H_kv=8, d_h=80, d=W=3200, vocab 60416,
             memory layers 0-21); built by shape only in tests.

Override from the CLI with ``--config.model.num_layers=8``,
``--config.model.scan_layers=True``, ``--config.model.remat_policy=full`` etc.
"""

from __future__ import annotations

import importlib

import ml_collections

from m3jax import sharding
from m3jax.model.config import ModelConfig
from m3jax.run.config import section_of

VARIANTS = ("tiny", "small", "small_paper", "paper_2p4b")
SECTIONS = ("data", "bank", "train", "eval")

_MODELS = {
  "tiny": dict(
    vocab_size=512,
    num_layers=4,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    embed_dim=64,
    mlp_dim=128,
    attention_impl="dense",
    scan_layers=False,
    remat_policy="none",
    memory=dict(
      memory_layers=(0, 1), tokens_per_head=4, refs_per_chunk=5, chunk_len=16, ref_len=32
    ),
  ),
  "small": dict(
    vocab_size=2048,
    num_layers=4,
    num_heads=4,
    num_kv_heads=2,
    head_dim=32,
    embed_dim=128,
    mlp_dim=384,
    attention_impl="dense",
    scan_layers=False,
    remat_policy="none",
    # The CPU demo differs from the paper's memory layout (docs/design.md,
    # "the small demo config"): memories in all 4 layers (a 4-layer model
    # learns to copy a value from memory at its top layer, where the query
    # has read the question; with the first half only it does not within a
    # 2-core budget), one reference per chunk, 32-token references (the
    # invented world's references are 20-31 tokens), 16 tokens per head.
    # ref_len_fit: a knowledge base of longer lines (bring your own) grows
    # ref_len to hold 90% of them whole (m3jax.run.reference_length).
    # smeared_keys_fit: smeared keys (model.smeared_keys) unless one word introduces
    # most of the knowledge base's values, as "=" does in the demo world's
    # key = value lines (m3jax.run.key_smearing; docs/design.md, "Session 26").
    # smear_width=2: each smeared key mixes in the two tokens before it ("launched in");
    # on two prose runs exact match 0.676 -> 0.941 and 0.820 -> 0.910 ("Session 27").
    smeared_keys_fit=0.5,
    smear_width=2,
    # init_std=0.05: GPT-2's 0.02 is about 0.55/sqrt(d) at its d=768, and 0.02 at this
    # width (d=128) is 0.23/sqrt(d), a far smaller start. At 0.05 (0.57/sqrt(d)) the
    # demo's two slowest initializations start reading memory ~800 steps sooner
    # (docs/design.md, "Session 35").
    init_std=0.05,
    memory=dict(
      memory_layers=(0, 1, 2, 3),
      tokens_per_head=16,
      refs_per_chunk=1,
      chunk_len=64,
      ref_len=32,
      ref_len_fit=0.9,
    ),
  ),
  # The paper's memory layout at CPU size (issue #10, docs/design.md): memories in the
  # first half of 8 layers, 5 references per chunk, 8 tokens per KV head. Same width,
  # data and schedule as small, to compare the two layouts on one budget.
  "small_paper": dict(
    vocab_size=2048,
    num_layers=8,
    num_heads=4,
    num_kv_heads=2,
    head_dim=32,
    embed_dim=128,
    mlp_dim=384,
    attention_impl="dense",
    smeared_keys_fit=0.5,  # as small
    smear_width=2,  # as small (session 27's paper-layout run had 1)
    init_std=0.05,  # as small
    memory=dict(
      memory_layers=(0, 1, 2, 3),
      tokens_per_head=8,
      refs_per_chunk=5,
      chunk_len=64,
      ref_len=32,
      ref_len_fit=0.9,
    ),
  ),
  "paper_2p4b": dict(
    vocab_size=60416,
    num_layers=44,
    num_heads=40,
    num_kv_heads=8,
    head_dim=80,
    embed_dim=3200,
    mlp_dim=3200,
    # auto: cuDNN on GPU, m3jax's Pallas flash kernel on TPU
    # (m3jax.model.joint_attention.resolve_impl).
    dtype="bfloat16",
    param_dtype="float32",
    attention_impl="auto",
    # Two scanned runs (memory layers 0-21, the rest); the backward
    # pass keeps the projections' outputs and the flash kernel's output
    # and logsumexp, and recomputes the rest (m3jax.model.stack).
    scan_layers=True,
    remat_policy="dots_attention_out",
    memory=dict(
      memory_layers=tuple(range(22)), tokens_per_head=8, refs_per_chunk=5, chunk_len=64, ref_len=128
    ),
  ),
}


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  if arg not in VARIANTS:
    raise ValueError(f"unknown config variant {arg!r}; choose one of {VARIANTS}")
  config = ml_collections.ConfigDict()
  config.variant = arg
  config.seed = 0
  # Every ModelConfig field (defaults from the dataclass), the variant's shape set.
  config.model = section_of(ModelConfig, _MODELS[arg])

  config.sharding = ml_collections.ConfigDict()
  config.sharding.mesh_shape = (-1, 1, 1)  # (data, fsdp, tensor)
  config.sharding.mesh_axes = tuple(sharding.MESH_AXES)
  config.sharding.rules = tuple(tuple(r) for r in sharding.DEFAULT_RULES)

  # One section per subsystem, each owned by its own file under configs/sections/.
  for name in SECTIONS:
    module = importlib.import_module(f"configs.sections.{name}")
    config[name] = module.get(arg)
  return config
