"""Test doubles: a random tiny model and a deterministic memory source (a fake bank)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from configs.memory3 import get_config
from m3jax.model.memory_kv import MemoryKV
from m3jax.model.config import model_config_from
from m3jax.model.transformer import Transformer


def tiny_model(seed: int = 0, init_std: float = 0.3):
  """Random tiny model; a large init_std makes logits peaked so greedy ties are rare."""
  cfg = dataclasses.replace(model_config_from(get_config("tiny").model), init_std=init_std)
  params = Transformer(cfg).init(jax.random.key(seed), jnp.ones((1, 4), jnp.int32))["params"]
  params = jax.tree.map(
    lambda x: x.unbox() if hasattr(x, "unbox") else x, params, is_leaf=lambda x: hasattr(x, "unbox")
  )
  return cfg, params


class FakeBank:
  """``num`` random memories; a query's ids are a hash of its tokens (so memory changes
  when the query chunk changes). Some memories are partially masked."""

  def __init__(self, cfg, num: int = 11, seed: int = 1, scale: float = 3.0):
    m = cfg.memory
    rng = np.random.default_rng(seed)
    shape = (num, m.num_memory_layers, cfg.num_kv_heads, m.tokens_per_head, cfg.head_dim)
    self.keys = (scale * rng.standard_normal(shape)).astype(np.float32)
    self.values = (scale * rng.standard_normal(shape)).astype(np.float32)
    self.mask = np.ones((num, m.tokens_per_head), bool)
    self.mask[::3, -1] = False
    self.num, self.R = num, m.refs_per_chunk
    self.calls = []

  def ids_for(self, tokens) -> np.ndarray:
    h = int(np.sum((np.asarray(tokens, np.int64) + 7) * (np.arange(len(tokens)) + 13)))
    ids = (h + 5 * np.arange(self.R)) % self.num
    ids[-1] = -1 if h % 2 else ids[-1]  # sometimes fewer than R memories
    return ids

  def memory_for_ids(self, ids_NxR) -> MemoryKV:
    ids = np.asarray(ids_NxR)
    safe = np.where(ids >= 0, ids, 0)
    k = np.moveaxis(self.keys[safe], 2, 0)[:, :, None]  # [L, N, 1, R, K, M, D]
    v = np.moveaxis(self.values[safe], 2, 0)[:, :, None]
    mask = (self.mask[safe] & (ids >= 0)[..., None])[:, None]
    return MemoryKV(jnp.asarray(k), jnp.asarray(v), jnp.asarray(mask))

  def __call__(self, queries):
    self.calls.append(list(queries))
    ids = np.stack([self.ids_for(q.tokens) for q in queries])
    return self.memory_for_ids(ids), ids
