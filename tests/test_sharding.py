"""Sharded forward and gradient step on a 2x4 fake CPU mesh, with the rules' PartitionSpecs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from configs import memory3
from m3jax import axes, sharding
from m3jax.model.memory_kv import MemoryKV
from m3jax.model.config import model_config_from
from m3jax.model.transformer import Transformer


def _setup(mesh_shape, **model_overrides):
  config = memory3.get_config("tiny")
  config.model.update(model_overrides)
  cfg = model_config_from(config.model.to_dict())
  mesh = sharding.make_mesh(mesh_shape)
  return config, cfg, mesh


@pytest.mark.parametrize(
  "mesh_shape,overrides",
  [
    ((2, 4, 1), {}),  # data x fsdp
    ((2, 1, 4), {"num_heads": 8, "num_kv_heads": 4}),  # data x tensor
  ],
)
@pytest.mark.integration
def test_sharded_forward_and_grad_step(mesh_shape, overrides):
  assert len(jax.devices()) == 8, "tests/conftest.py must force 8 CPU devices"
  config, cfg, mesh = _setup(mesh_shape, **overrides)
  rules = config.sharding.rules
  model = Transformer(cfg)
  b, t = 8, 2 * cfg.memory.chunk_len
  tokens = jax.random.randint(jax.random.key(0), (b, t), 5, cfg.vocab_size)
  variables, shardings = sharding.init_sharded(
    lambda r: model.init(r, tokens[:1]), mesh, rules, jax.random.key(1)
  )
  params, param_shardings = variables["params"], shardings["params"]

  # Parameters carry the PartitionSpecs the rules say.
  spec = lambda *names: sharding.spec_for(names, rules)
  layer = param_shardings["layer_0"]
  assert layer["attn"]["q"].spec == spec(axes.EMBED, axes.HEADS, axes.HEAD_DIM)
  assert layer["mlp"]["up"].spec == spec(axes.EMBED, axes.MLP)
  assert param_shardings["embed"]["embedding"].spec == spec(axes.VOCAB, axes.EMBED)
  assert layer["attn"]["q"].spec == P("fsdp", "tensor", None)
  assert layer["attn"]["k"].spec == P("fsdp", "tensor", None)
  q = params["layer_0"]["attn"]["q"]
  assert q.sharding.spec == layer["attn"]["q"].spec
  _, fsdp, tensor = mesh_shape
  assert q.addressable_shards[0].data.shape == (
    cfg.embed_dim // fsdp,
    cfg.num_heads // tensor,
    cfg.head_dim,
  )

  # Memory tensors get their own logical axes.
  mem_shardings = sharding.memory_shardings(mesh, rules)
  m = cfg.memory
  shape = (
    m.num_memory_layers,
    b,
    2,
    m.refs_per_chunk,
    cfg.num_kv_heads,
    m.tokens_per_head,
    cfg.head_dim,
  )
  mem = MemoryKV(
    jax.random.normal(jax.random.key(2), shape),
    jax.random.normal(jax.random.key(3), shape),
    jnp.ones((b, 2, m.refs_per_chunk, m.tokens_per_head), bool),
  )
  mem = jax.device_put(mem, mem_shardings)
  assert mem.keys_LxBxCxRxKxMxD.sharding.spec == spec(*axes.MEMORY_KV_AXES)
  assert mem.keys_LxBxCxRxKxMxD.sharding.spec[1] == ("data", "fsdp")
  assert mem.mask_BxCxRxM.sharding.spec == spec(*axes.MEMORY_MASK_AXES)

  batch_sharding = sharding.named(mesh, (axes.BATCH, axes.LENGTH), rules)
  tokens = jax.device_put(tokens, batch_sharding)

  def loss_fn(p, tok, memory):
    logits = model.apply({"params": p}, tok, memory)
    return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tok[:, 1:]).mean()

  def sgd_step(p, tok, memory):
    loss, grads = jax.value_and_grad(loss_fn)(p, tok, memory)
    return jax.tree.map(lambda w, g: w - 0.1 * g, p, grads), loss

  train_step = jax.jit(
    sgd_step,
    in_shardings=(param_shardings, batch_sharding, mem_shardings),
    out_shardings=(param_shardings, None),
  )

  with sharding.activate(mesh, rules):
    new_params, loss = train_step(params, tokens, mem)
    sharded_logits = jax.jit(lambda p, tok, memory: model.apply({"params": p}, tok, memory))(
      params, tokens, mem
    )
  assert np.isfinite(float(loss))
  assert new_params["layer_0"]["attn"]["q"].sharding.spec == layer["attn"]["q"].spec

  # The sharded forward computes the same function as an unsharded one.
  host = jax.tree.map(np.asarray, (params, tokens, mem))
  plain = model.apply({"params": host[0]}, host[1], host[2])
  np.testing.assert_allclose(np.asarray(sharded_logits), np.asarray(plain), rtol=1e-4, atol=1e-4)


def test_mesh_size_mismatch_is_a_clear_error():
  with pytest.raises(ValueError, match="mesh_shape"):
    sharding.make_mesh((3, 1, 1))
