"""The train state, created by shape first (STYLE practice 5).

``eval_shape(init)`` gives the logical partitioning of params and optimizer state, the
rules turn it into NamedShardings, and ``jit(init, out_shardings=...)`` materializes
every array directly in its shard: no host copy of a full model ever exists.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from m3jax import sharding
from m3jax.model.config import ModelConfig
from m3jax.model.transformer import Transformer


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: steps taken in the current stage
  params: Any
  opt_state: Any


def _init_fn(cfg: ModelConfig, tx: optax.GradientTransformation):
  def init(rng):
    # Parameters depend on neither the length nor the attention kernel: init on a short
    # dummy context with plain XLA attention (a fused kernel under a mesh would have to
    # shard that one-row batch).
    init_cfg = dataclasses.replace(cfg, attention_impl="flat")
    params = Transformer(init_cfg).init(rng, jnp.zeros((1, 8), jnp.int32))["params"]
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))

  return init


def create_train_state(cfg: ModelConfig, tx, mesh, rules, rng):
  """A freshly initialized state and its shardings."""
  return sharding.init_sharded(_init_fn(cfg, tx), mesh, rules, rng)


def state_shardings(cfg: ModelConfig, tx, mesh, rules):
  """Shardings of the state, from shapes only (nothing is computed)."""
  key = jax.random.key(0)  # concrete, so made outside the mesh (it may be an AOT topology's)
  with sharding.activate(mesh, rules):
    abstract = jax.eval_shape(_init_fn(cfg, tx), key)
    return sharding.logical_to_sharding(nn.get_partition_spec(abstract), mesh, rules)


def abstract_state(cfg: ModelConfig, tx, mesh, rules):
  """ShapeDtypeStructs carrying shardings: the restore target of a checkpoint."""
  key = jax.random.key(0)
  with sharding.activate(mesh, rules):
    boxed = jax.eval_shape(_init_fn(cfg, tx), key)
  is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)
  abstract = jax.tree_util.tree_map(
    lambda x: x.unbox(apply_constraint=False) if is_box(x) else x, boxed, is_leaf=is_box
  )
  shardings = state_shardings(cfg, tx, mesh, rules)
  return jax.tree_util.tree_map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
  )


def fresh_state_from_params(params, tx, shardings):
  """Step 0 with a new optimizer state around given params (stage handoff)."""
  init = lambda p: TrainState(jnp.zeros((), jnp.int32), p, tx.init(p))
  return jax.jit(init, out_shardings=shardings)(params)
