"""The jitted train step: loss, gradients, AdamW update, per-step metrics.

Explicit shardings (params from their logical axes, the batch on the ``batch`` axis,
memories from the memory axis rules) and donation of the train state, so the update
happens in place. Stage-2 memories are encoded inside the step (m3jax.train.memory_batch).

The step that trains never asks for the memory-mass metric (it needs the dense softmax,
whose [T, S] probabilities the fused kernels never form); ``make_memory_mass_probe`` is a
separate jitted forward that the loop calls at logging steps.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from m3jax import axes, sharding
from m3jax.model.config import ModelConfig
from m3jax.model.transformer import Transformer
from m3jax.train import accumulate
from m3jax.train.losses import cross_entropy
from m3jax.train.memory_batch import memory_from_batch
from m3jax.train.optimizer import apply_lr
from m3jax.train.stages import StageSpec
from m3jax.train.state import TrainState

TEXT_KEYS = ("inputs", "targets", "loss_mask")
MEMORY_KEYS = ("ref_tokens", "ref_lengths")

_BATCH_AXES = {
  "inputs": (axes.BATCH, axes.LENGTH),
  "targets": (axes.BATCH, axes.LENGTH),
  "loss_mask": (axes.BATCH, axes.LENGTH),
  "ref_tokens": (axes.BATCH, axes.MEM_CHUNKS, None),
  "ref_lengths": (axes.BATCH, axes.MEM_CHUNKS),
}


def batch_keys(stage: StageSpec) -> tuple[str, ...]:
  return TEXT_KEYS + (MEMORY_KEYS if stage.use_memory else ())


def batch_shardings(stage: StageSpec, mesh, rules) -> dict[str, NamedSharding]:
  return {k: sharding.named(mesh, _BATCH_AXES[k], rules) for k in batch_keys(stage)}


def _batch_memory(cfg: ModelConfig, stage: StageSpec, params, batch, rng, mem_sharding):
  if not stage.use_memory:
    return None
  memory = memory_from_batch(
    params,
    cfg,
    batch["ref_tokens"],
    batch["ref_lengths"],
    encode_grad=stage.encode_grad,
    rng=rng if cfg.memory.selection == "random" else None,
    window=stage.memory_window,
  )
  if mem_sharding is not None:
    memory = jax.lax.with_sharding_constraint(memory, mem_sharding)
  return memory


def make_loss_fn(
  cfg: ModelConfig,
  stage: StageSpec,
  z_loss: float = 0.0,
  mem_sharding=None,
  memory_exit_loss: float = 0.0,
) -> Callable:
  """``loss_fn(params, batch, rng, enc_params=None) -> (loss, aux)``.

  ``enc_params`` (default: ``params``) encodes the references; passing a separate copy
  lets tests take the gradient through the memory path alone. ``memory_exit_loss`` > 0
  (a stage with memory only) adds that weight times the same cross-entropy read after
  the last memory layer (``train.memory_exit_loss``); aux then has ``exit_ce``.
  """
  model = Transformer(cfg)
  with_exit = memory_exit_loss > 0 and stage.use_memory

  def loss_fn(params, batch, rng, enc_params=None):
    memory = _batch_memory(
      cfg, stage, params if enc_params is None else enc_params, batch, rng, mem_sharding
    )
    if not with_exit:
      logits = model.apply({"params": params}, batch["inputs"], memory)
      return cross_entropy(logits, batch["targets"], batch["loss_mask"], z_loss)
    logits, exit_logits = model.apply(
      {"params": params}, batch["inputs"], memory, return_exit_logits=True
    )
    loss, aux = cross_entropy(logits, batch["targets"], batch["loss_mask"], z_loss)
    exit_loss, exit_aux = cross_entropy(exit_logits, batch["targets"], batch["loss_mask"])
    return loss + memory_exit_loss * exit_loss, {**aux, "exit_ce": exit_aux["ce"]}

  return loss_fn


def memory_mass_fn(cfg: ModelConfig, stage: StageSpec, mem_sharding=None) -> Callable:
  """``mass_fn(params, batch, rng) -> [Lm]``: attention mass on memories per memory
  layer, averaged over counted tokens and heads (empty without memory). The same
  memories and forward as ``make_loss_fn``'s, through the dense softmax."""
  model = Transformer(cfg)

  def mass_fn(params, batch, rng):
    if not stage.use_memory:
      return jnp.zeros((0,), jnp.float32)
    memory = _batch_memory(cfg, stage, params, batch, rng, mem_sharding)
    _, mass_LmxBxTxH = model.apply(
      {"params": params}, batch["inputs"], memory, return_memory_mass=True
    )
    # Counted tokens, not loss weights: a swapped token weighted more in the loss
    # (data.memory_swap_loss_weight) counts once here.
    w_BxT = (batch["loss_mask"] > 0).astype(jnp.float32)
    return jnp.einsum("lbth,bt->l", mass_LmxBxTxH.astype(jnp.float32), w_BxT) / (
      jnp.maximum(jnp.sum(w_BxT), 1.0) * mass_LmxBxTxH.shape[-1]
    )

  return mass_fn


def step_options(train_cfg) -> dict:
  """``make_train_step``'s keyword options from a train config (``config.train`` or the
  ConfigDict of its STEP keys), read strictly: the loop's cached step and the AOT
  compile build the same step from one reading."""
  return {
    "z_loss": float(train_cfg.z_loss),
    "microbatches": int(train_cfg.microbatches),
    "memory_exit_loss": float(train_cfg.memory_exit_loss),
  }


def make_train_step(
  cfg: ModelConfig,
  stage: StageSpec,
  tx: optax.GradientTransformation,
  *,
  mesh,
  rules,
  state_shardings,
  z_loss: float = 0.0,
  seed: int = 0,
  microbatches: int = 1,
  memory_exit_loss: float = 0.0,
):
  """``train_step(state, batch, lr) -> (state, metrics)``, jitted with explicit shardings.

  ``lr`` is the stage schedule's value at ``state.step`` (a float32 scalar computed on
  the host; see m3jax.train.optimizer.make_optimizer for why). Of the stage only
  ``use_memory`` and ``encode_grad`` shape the computation. ``microbatches`` > 1
  accumulates gradients over that many pieces of the batch (m3jax.train.accumulate).

  Call it inside ``m3jax.sharding.activate(mesh, rules)`` (the model's logical
  constraints resolve against the active rules at trace time).
  """
  mem_sh = sharding.memory_shardings(mesh, rules) if stage.use_memory else None
  loss_fn = make_loss_fn(cfg, stage, z_loss, mem_sh, memory_exit_loss)
  base_rng = jax.random.key(seed)
  b_sh = batch_shardings(stage, mesh, rules)
  grad_fn = accumulate.value_and_grad(
    loss_fn, microbatches, batch_shardings=b_sh, grad_shardings=state_shardings.params
  )

  def train_step(state: TrainState, batch, lr):
    rng = jax.random.fold_in(base_rng, state.step)
    (loss, aux), grads = grad_fn(state.params, batch, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, apply_lr(updates, lr))
    metrics = {
      "loss": loss,
      "ce": aux["ce"],
      "tokens": aux["tokens"],
      **({"exit_ce": aux["exit_ce"]} if "exit_ce" in aux else {}),
      "grad_norm": optax.global_norm(grads),
      "lr": lr,
    }
    return TrainState(state.step + 1, params, opt_state), metrics

  replicated = NamedSharding(mesh, PartitionSpec())
  return jax.jit(
    train_step,
    in_shardings=(state_shardings, b_sh, replicated),
    out_shardings=(state_shardings, replicated),
    donate_argnums=(0,),
  )


def make_memory_mass_probe(cfg: ModelConfig, stage: StageSpec, *, mesh, rules, seed: int = 0):
  """``probe(state, batch) -> mass [Lm]``, jitted: the memory mass of the forward the
  train step would run on ``batch`` from ``state`` (same live memories, same selection
  rng). Never donates: call it before the step at the steps you log. Inputs keep the
  shardings they carry (the train state's and ``batch_shardings``)."""
  mem_sh = sharding.memory_shardings(mesh, rules) if stage.use_memory else None
  mass_fn = memory_mass_fn(cfg, stage, mem_sh)
  base_rng = jax.random.key(seed)

  def probe(state: TrainState, batch):
    return mass_fn(state.params, batch, jax.random.fold_in(base_rng, state.step))

  return jax.jit(probe, out_shardings=NamedSharding(mesh, PartitionSpec()))


def cached_memory_mass_probe(cfg: ModelConfig, stage: StageSpec, mesh, rules: tuple, seed: int = 0):
  """``make_memory_mass_probe`` memoized like ``cached_train_step``."""
  return _cached_probe(cfg, stage.use_memory, stage.encode_grad, mesh, rules, seed)


@functools.lru_cache(maxsize=16)
def _cached_probe(cfg, use_memory, encode_grad, mesh, rules, seed):
  stage = StageSpec(
    name="probe", steps=1, peak_lr=0.0, use_memory=use_memory, encode_grad=encode_grad
  )
  return make_memory_mass_probe(cfg, stage, mesh=mesh, rules=rules, seed=seed)


def cached_train_step(cfg: ModelConfig, stage: StageSpec, hyper: tuple, mesh, rules: tuple):
  """``make_train_step`` memoized on what shapes the computation.

  Only ``use_memory``/``encode_grad`` of the stage matter (the LR is an argument), so
  the stages and sweep points of one shape, and re-runs of ``train`` in one process (a
  notebook, a resumed run), reuse one compiled step. ``hyper`` is
  ``(tuple of (train_cfg key, value)), seed)`` over ``train_keys(STEP)``, read strictly:
  a field the step needs that is not a STEP key fails here, not silently at its default.
  Returns (step, tx, state shardings).
  """
  return _cached_train_step(cfg, stage.use_memory, stage.encode_grad, hyper, mesh, rules)


@functools.lru_cache(maxsize=16)
def _cached_train_step(cfg, use_memory, encode_grad, hyper, mesh, rules):
  import ml_collections
  from m3jax.train.optimizer import make_optimizer
  from m3jax.train.state import state_shardings

  train_items, seed = hyper
  tc = ml_collections.ConfigDict(dict(train_items))
  stage = StageSpec(
    name="step", steps=1, peak_lr=0.0, use_memory=use_memory, encode_grad=encode_grad
  )
  tx = make_optimizer(tc)
  shardings = state_shardings(cfg, tx, mesh, rules)
  step = make_train_step(
    cfg,
    stage,
    tx,
    mesh=mesh,
    rules=rules,
    state_shardings=shardings,
    seed=seed,
    **step_options(tc),
  )
  return step, tx, shardings
