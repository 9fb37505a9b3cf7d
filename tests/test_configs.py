"""Every config variant builds; the paper shape is checked by eval_shape only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import memory3
from m3jax.model.config import MemoryConfig, ModelConfig, model_config_from
from m3jax.model.transformer import Transformer


@pytest.mark.parametrize("variant", memory3.VARIANTS)
def test_every_variant_builds_by_shape(variant):
  config = memory3.get_config(variant)
  cfg = model_config_from(config.model.to_dict())
  shapes = jax.eval_shape(
    lambda: Transformer(cfg).init(jax.random.key(0), jnp.ones((1, 4), jnp.int32))
  )
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
  assert n > 0


def test_small_paper_differs_from_small_only_in_the_memory_layout():
  """The layout comparison's premise: same width, data and schedule as the demo's; its
  training adds only the exit loss after the last memory layer (design.md, Session 19)
  and weighs a swapped token 5, not 3 (Session 39)."""
  small, paper = memory3.get_config("small"), memory3.get_config("small_paper")
  train = lambda c: {k: v for k, v in c.train.to_dict().items() if k != "memory_exit_loss"}
  assert train(small) == train(paper)
  assert (small.train.memory_exit_loss, paper.train.memory_exit_loss) == (0.0, 1.0)
  skip = ("data_dir", "memory_swap_loss_weight")
  data = lambda c: {k: v for k, v in c.data.to_dict().items() if k not in skip}
  assert data(small) == data(paper)
  weights = (small.data.memory_swap_loss_weight, paper.data.memory_swap_loss_weight)
  assert weights == (3.0, 5.0), weights
  a, b = small.model.to_dict(), paper.model.to_dict()
  differ = sorted(k for k in a if a[k] != b[k])
  assert differ == ["memory", "num_layers"], differ
  assert b["memory"]["memory_layers"] == tuple(range(b["num_layers"] // 2))
  assert (b["memory"]["refs_per_chunk"], b["memory"]["tokens_per_head"]) == (5, 8)


def test_paper_config_has_2p433b_non_embedding_params():
  cfg = model_config_from(memory3.get_config("paper_2p4b").model.to_dict())
  shapes = jax.eval_shape(
    lambda: Transformer(cfg).init(jax.random.key(0), jnp.ones((1, 4), jnp.int32))
  )["params"]
  total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
  embedding = cfg.vocab_size * cfg.embed_dim * (1 if cfg.tie_embeddings else 2)
  non_embedding = total - embedding
  assert abs(non_embedding - 2.433e9) / 2.433e9 < 1e-3, non_embedding
  assert non_embedding == cfg.non_embedding_params()
  assert cfg.memory.memory_layers == tuple(range(22))
  assert (cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (44, 40, 8, 80)


@pytest.mark.parametrize(
  "kwargs,field",
  [
    (dict(num_heads=6, num_kv_heads=4), "num_kv_heads"),
    (dict(memory=MemoryConfig(memory_layers=(0, 9))), "memory.memory_layers"),
    (dict(head_dim=7), "head_dim"),
    (dict(ref_id=3, bos_id=3), "ref_id"),
  ],
)
def test_invalid_model_config_names_the_field(kwargs, field):
  base = dict(
    vocab_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, embed_dim=32, mlp_dim=64
  )
  with pytest.raises(ValueError, match=field.replace(".", r"\.")):
    ModelConfig(**{**base, **kwargs})


@pytest.mark.parametrize(
  "kwargs,field",
  [
    (dict(tokens_per_head=200), "memory.tokens_per_head"),
    (dict(memory_layers=(2, 1)), "memory.memory_layers"),
    (dict(selection="max"), "memory.selection"),
    (dict(chunk_len=0), "memory.chunk_len"),
  ],
)
def test_invalid_memory_config_names_the_field(kwargs, field):
  with pytest.raises(ValueError, match=field.replace(".", r"\.")):
    MemoryConfig(**kwargs)


def test_unknown_config_keys_are_rejected():
  config = memory3.get_config("tiny").model.to_dict()
  config["num_layer"] = 3
  with pytest.raises(ValueError, match="unknown config keys.*num_layer"):
    model_config_from(config)
  with pytest.raises(ValueError, match="unknown config variant"):
    memory3.get_config("huge")
