"""Gradient accumulation equals the whole-batch gradient (stage 2, uneven loss masks)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m3jax import sharding
from m3jax.model.config import model_config_from
from m3jax.train import accumulate
from m3jax.train.optimizer import make_optimizer
from m3jax.train.config import train_config_from
from m3jax.train.state import create_train_state
from m3jax.train.step import batch_shardings, make_loss_fn, make_train_step
from m3jax.train.synthetic import SyntheticIterator
from tests.train.conftest import tiny_config


def _setup(mesh_shape=(2, 2, 1)):
  config = tiny_config(shallow=True)
  cfg = model_config_from(config.model)
  stage = train_config_from(config.train).stages[1]  # continual: memory + encode_grad
  mesh = sharding.make_mesh(mesh_shape, devices=jax.devices()[: int(np.prod(mesh_shape))])
  rules = sharding.normalize_rules(config.sharding.rules)
  it = SyntheticIterator(
    batch_size=8,
    seq_len=64,
    vocab_size=cfg.vocab_size,
    chunk_len=cfg.memory.chunk_len,
    ref_len=cfg.memory.ref_len,
    bos_id=cfg.bos_id,
    with_refs=True,
    seed=0,
  )
  batch = next(it)
  # Uneven counted tokens per row, so a mean of microbatch means would be wrong.
  keep = (
    np.random.default_rng(0).random(batch["loss_mask"].shape) < np.linspace(0.1, 1.0, 8)[:, None]
  )
  batch["loss_mask"] = (batch["loss_mask"] * keep).astype(np.float32)
  return config, cfg, stage, mesh, rules, batch


@pytest.mark.integration
def test_microbatched_grads_equal_whole_batch():
  config, cfg, stage, mesh, rules, batch = _setup()
  tx = make_optimizer(config.train)
  with sharding.activate(mesh, rules):
    state, shardings = create_train_state(cfg, tx, mesh, rules, jax.random.key(0))
    b_sh = batch_shardings(stage, mesh, rules)
    batch = {k: jax.device_put(batch[k], b_sh[k]) for k in b_sh}
    loss_fn = make_loss_fn(cfg, stage, z_loss=1e-3)
    rng = jax.random.key(1)
    (loss1, aux1), g1 = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(state.params, batch, rng)
    fn = accumulate.value_and_grad(
      loss_fn, 4, batch_shardings=b_sh, grad_shardings=shardings.params
    )
    (loss4, aux4), g4 = jax.jit(fn)(state.params, batch, rng)
  # float32, the same terms summed in another order: relative error ~1e-6.
  np.testing.assert_allclose(loss4, loss1, rtol=1e-5)
  np.testing.assert_allclose(aux4["ce"], aux1["ce"], rtol=1e-5)
  assert float(aux4["tokens"]) == float(aux1["tokens"]) == float(batch["loss_mask"].sum())
  scale = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(g1))
  for a, b in zip(jax.tree.leaves(g4), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.integration
def test_train_step_with_microbatches_matches_one_batch():
  config, cfg, stage, mesh, rules, batch = _setup((1, 2, 1))
  tx = make_optimizer(config.train)
  metrics = {}
  for n in (1, 2):
    with sharding.activate(mesh, rules):
      state, shardings = create_train_state(cfg, tx, mesh, rules, jax.random.key(0))
      step = make_train_step(
        cfg, stage, tx, mesh=mesh, rules=rules, state_shardings=shardings, microbatches=n
      )
      _, metrics[n] = step(state, batch, np.float32(1e-3))
  for key in ("loss", "ce", "grad_norm", "tokens"):
    np.testing.assert_allclose(metrics[2][key], metrics[1][key], rtol=1e-5, err_msg=key)


def test_split_keeps_each_devices_rows():
  x = np.arange(8 * 3).reshape(8, 3)
  micro = accumulate.split_microbatches({"x": jnp.asarray(x)}, 4)["x"]
  assert micro.shape == (4, 2, 3)
  # Microbatch j holds rows j, j+4: rows 0-3 (first device of two) feed row 0 of each.
  np.testing.assert_array_equal(micro[:, 0], x[:4])
  np.testing.assert_array_equal(micro[:, 1], x[4:])


@pytest.mark.parametrize(
  "batch,n,dp,msg",
  [
    (8, 3, 1, "not divisible by config.train.microbatches=3"),
    (8, 4, 4, "does not divide over the 4 data×fsdp devices"),
    (8, 0, 1, "must be >= 1"),
  ],
)
def test_bad_microbatch_counts(batch, n, dp, msg):
  with pytest.raises(ValueError, match=msg):
    accumulate.check_divides(batch, n, dp)


def test_toy_loss_accumulates_to_the_token_weighted_mean():
  """No model: a masked squared error, whose whole-batch gradient is known in closed form."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(8, 5, 3)), jnp.float32)
  mask = jnp.asarray(rng.random((8, 5)) < np.linspace(0.1, 1.0, 8)[:, None], jnp.float32)
  w = jnp.asarray(rng.normal(size=(3,)), jnp.float32)

  def loss_fn(w, batch, rng):
    err_BxT = jnp.square(batch["x"] @ w - 1.0)
    tokens = jnp.sum(batch["loss_mask"])
    loss = jnp.sum(err_BxT * batch["loss_mask"]) / jnp.maximum(tokens, 1.0)
    return loss, {"ce": loss, "tokens": tokens}

  batch = {"x": x, "loss_mask": mask}
  (loss, aux), grad = accumulate.value_and_grad(loss_fn, 4)(w, batch, jax.random.key(0))
  # Closed form over the whole batch: mean over counted tokens of (x·w - 1)², and its gradient.
  err = np.asarray(x) @ np.asarray(w) - 1.0
  m = np.asarray(mask)
  np.testing.assert_allclose(loss, (err**2 * m).sum() / m.sum(), rtol=1e-5)
  np.testing.assert_allclose(
    grad, np.einsum("bt,btd->d", 2 * err * m, np.asarray(x)) / m.sum(), rtol=1e-4, atol=1e-6
  )
  assert float(aux["tokens"]) == m.sum()
