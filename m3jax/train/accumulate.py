"""Gradient accumulation over microbatches, exact up to float summation order.

The paper's step is about 4M tokens (2048 sequences of 2048); no chip holds the
activations of its share at once, so the train step splits the batch into
``config.train.microbatches`` pieces and runs them one after another under
``lax.scan``, summing gradients. The loss is a mean over counted tokens, so microbatch
i is weighted by its share of the batch's counted tokens: the accumulated loss and
gradients are those of the whole batch, not a mean of microbatch means.

Microbatch j takes rows j, j+n, j+2n, … of the global batch (a reshape to [B/n, n, …]
then a transpose): with the batch sharded in contiguous row blocks, every device keeps
its own rows in every microbatch, so splitting moves no data.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

# Aux entries that add up across microbatches; every other entry is a per-token mean.
SUMMED_AUX = ("tokens",)


def check_divides(batch: int, microbatches: int, data_parallel: int = 1) -> int:
  """The microbatch size; a clear error when the batch does not split evenly."""
  if microbatches < 1:
    raise ValueError(f"config.train.microbatches must be >= 1, got {microbatches}")
  if batch % microbatches:
    raise ValueError(
      f"config.train.batch_size={batch} is not divisible by "
      f"config.train.microbatches={microbatches}"
    )
  micro = batch // microbatches
  if micro % data_parallel:
    raise ValueError(
      f"a microbatch of {micro} sequences (batch {batch} / {microbatches} "
      f"microbatches) does not divide over the {data_parallel} data×fsdp "
      "devices; lower config.train.microbatches or change the mesh"
    )
  return micro


def split_microbatches(batch: dict, microbatches: int, shardings: dict | None = None) -> dict:
  """[B, …] leaves -> [n, B/n, …]; microbatch j holds rows j, j+n, … (see module doc)."""

  def split(key, x):
    b = x.shape[0]
    check_divides(b, microbatches)
    x = x.reshape((b // microbatches, microbatches) + x.shape[1:]).swapaxes(0, 1)
    if shardings is not None and key in shardings:
      sh = shardings[key]
      x = jax.lax.with_sharding_constraint(x, NamedSharding(sh.mesh, PartitionSpec(None, *sh.spec)))
    return x

  return {k: split(k, v) for k, v in batch.items()}


def value_and_grad(
  loss_fn: Callable, microbatches: int = 1, *, batch_shardings=None, grad_shardings=None
) -> Callable:
  """``fn(params, batch, rng) -> ((loss, aux), grads)`` over ``microbatches`` pieces.

  ``loss_fn(params, batch, rng) -> (loss, aux)`` must be a mean weighted by
  ``batch["loss_mask"]`` (aux: per-token means, and "tokens" counted); microbatches are
  combined in proportion to their summed weights, which is exact for the loss (aux
  means too while the weights are 0/1). Microbatch j
  gets ``fold_in(rng, j)``. With one microbatch this is ``jax.value_and_grad``.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if microbatches == 1:
    return grad_fn

  def fn(params, batch, rng):
    micro = split_microbatches(batch, microbatches, batch_shardings)
    mask = micro["loss_mask"].astype(jnp.float32)
    tokens_n = jnp.sum(mask.reshape(microbatches, -1), axis=1)
    weight_n = tokens_n / jnp.maximum(jnp.sum(tokens_n), 1.0)
    first = jax.tree.map(lambda x: x[0], micro)
    _, aux_shape = jax.eval_shape(loss_fn, params, first, rng)
    zeros = lambda tree: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), tree)
    grads0 = jax.tree.map(jnp.zeros_like, params)
    if grad_shardings is not None:
      grads0 = jax.lax.with_sharding_constraint(grads0, grad_shardings)

    def body(carry, xs):
      loss_acc, aux_acc, grad_acc = carry
      mb, w, j = xs
      (loss, aux), g = grad_fn(params, mb, jax.random.fold_in(rng, j))
      grad_acc = jax.tree.map(
        lambda a, x: a + (w * x.astype(jnp.float32)).astype(a.dtype), grad_acc, g
      )
      if grad_shardings is not None:
        grad_acc = jax.lax.with_sharding_constraint(grad_acc, grad_shardings)
      aux_acc = {k: aux_acc[k] + (aux[k] if k in SUMMED_AUX else w * aux[k]) for k in aux_acc}
      return (loss_acc + w * loss, aux_acc, grad_acc), None

    init = (jnp.zeros((), jnp.float32), zeros(aux_shape), grads0)
    (loss, aux, grads), _ = jax.lax.scan(body, init, (micro, weight_n, jnp.arange(microbatches)))
    return (loss, aux), grads

  return fn
