"""Layer stacks: scanned (stacked) parameters, remat policies, and layout conversion.

With ``model.scan_layers`` the layers run as ``jax.lax.scan`` over parameters stacked
on a leading layer axis, one scan per *run*: a maximal range of consecutive layers
that are all memory layers or all plain layers. The paper's layout (memory layers
0-21 of 44) gives two runs, the memory layers and the rest; memory layers that are
not contiguous simply give more runs (each scanned), so every layout works.

A run's parameters live under ``layers_{first}_to_{last}`` (inclusive) with the tree
of one ``layer_{i}`` and a leading axis of length ``last - first + 1``;
``scan_params``/``unscan_params`` convert a checkpoint between the two layouts.

``model.remat_policy`` says what the backward pass keeps of each layer
(``jax.checkpoint`` around one layer, in the scan body or around each unrolled layer):

  none                   everything the forward computed (no recomputation);
  full                   only the layer's inputs (residual stream x and the layer's own
                         sink/memory slices): the whole layer is recomputed;
  dots                   the outputs of every matmul, attention scores included
                         (``checkpoint_dots``): norms, RoPE, softmax, SiLU recomputed;
  dots_except_attention  the outputs of matmuls without batch dimensions
                         (``checkpoint_dots_with_no_batch_dims``): the q/k/v/o and
                         the three MLP projections. Attention (its batched score and
                         value matmuls, softmax, or the fused kernel), norms, RoPE and
                         SiLU are recomputed, so no [T, S] score matrix is kept.
  dots_attention_out     as dots_except_attention, and also the output and logsumexp
                         of the ``flash`` kernel (named ``attention_out`` and
                         ``attention_lse``, m3jax.model.flash_kernel): its backward
                         then needs no forward kernel again. Other attention impls
                         name nothing, so for them it is dots_except_attention.
"""

from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from m3jax import axes
from m3jax.model import flash_kernel, layers
from m3jax.model.config import ModelConfig

_STACK_NAME = re.compile(r"^layers_(\d+)_to_(\d+)$")
_LAYER_NAME = re.compile(r"^layer_(\d+)$")


def layer_runs(cfg: ModelConfig) -> tuple[tuple[int, int, bool], ...]:
  """Maximal runs of consecutive layers of one kind: ((start, stop, is_memory), …)."""
  runs = []
  for i in range(cfg.num_layers):
    mem = cfg.is_memory_layer(i)
    if runs and runs[-1][2] == mem:
      runs[-1] = (runs[-1][0], i + 1, mem)
    else:
      runs.append((i, i + 1, mem))
  return tuple(runs)


def stack_name(start: int, stop: int) -> str:
  return f"layers_{start}_to_{stop - 1}"


def remat_policy(name: str):
  """``(use_checkpoint, policy)`` for ``jax.checkpoint`` (see the module docstring)."""
  cp = jax.checkpoint_policies
  policies = {
    "none": (False, None),
    "full": (True, None),
    "dots": (True, jax.checkpoint_policies.checkpoint_dots),
    "dots_except_attention": (True, cp.checkpoint_dots_with_no_batch_dims),
    "dots_attention_out": (
      True,
      cp.save_from_both_policies(
        cp.checkpoint_dots_with_no_batch_dims,
        cp.save_only_these_names(flash_kernel.OUT_NAME, flash_kernel.LSE_NAME),
      ),
    ),
  }
  if name not in policies:
    raise ValueError(f"model.remat_policy={name!r} is not one of {sorted(policies)}")
  return policies[name]


def _is_box(x) -> bool:
  return isinstance(x, nn.meta.AxisMetadata)


def stacked_init(cfg: ModelConfig, length: int):
  """Param initializer for ``length`` stacked Blocks; logical axis ``layers`` in front."""

  def init(rng):
    x = jnp.zeros((1, 1, cfg.embed_dim), cfg.dtype)
    one = lambda key: layers.Block(cfg, parent=None).init(key, x, method="init_all")["params"]
    boxed = jax.vmap(one)(jax.random.split(rng, length))
    return jax.tree_util.tree_map(
      lambda b: b.add_axis(0, {nn.PARTITION_NAME: axes.LAYERS}) if _is_box(b) else b,
      boxed,
      is_leaf=_is_box,
    )

  return init


def bind_block(cfg: ModelConfig, params_i):
  """A Block bound to one layer's parameters (a slice of a stack)."""
  return layers.Block(cfg, parent=None).bind({"params": params_i})


# ------------------------------------------------------------------------ layout conversion
def is_scanned(params) -> bool:
  return any(_STACK_NAME.match(k) for k in params)


def scan_params(params: dict[str, Any], cfg: ModelConfig) -> dict[str, Any]:
  """Unrolled (``layer_{i}``) -> scanned (``layers_{a}_to_{b}``) parameters. Pure."""
  missing = [f"layer_{i}" for i in range(cfg.num_layers) if f"layer_{i}" not in params]
  if missing:
    raise ValueError(
      f"scan_params needs unrolled parameters; missing {missing[:3]}… "
      "(already scanned? see m3jax.model.stack.to_layout)"
    )
  out = {k: v for k, v in params.items() if not _LAYER_NAME.match(k)}
  for start, stop, _ in layer_runs(cfg):
    group = [params[f"layer_{i}"] for i in range(start, stop)]
    out[stack_name(start, stop)] = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *group)
  return out


def unscan_params(params: dict[str, Any], cfg: ModelConfig) -> dict[str, Any]:
  """Scanned (``layers_{a}_to_{b}``) -> unrolled (``layer_{i}``) parameters. Pure."""
  runs = layer_runs(cfg)
  names = [stack_name(a, b) for a, b, _ in runs]
  missing = [n for n in names if n not in params]
  if missing:
    raise ValueError(
      f"unscan_params needs the stacks {names} of this model's layout; missing {missing}"
    )
  out = {k: v for k, v in params.items() if not _STACK_NAME.match(k)}
  for (start, stop, _), name in zip(runs, names):
    for i in range(start, stop):
      out[f"layer_{i}"] = jax.tree_util.tree_map(lambda a, j=i - start: a[j], params[name])
  return out


def to_layout(params: dict[str, Any], cfg: ModelConfig) -> dict[str, Any]:
  """``params`` in either layout -> the layout ``cfg.scan_layers`` asks for."""
  if is_scanned(params) == cfg.scan_layers:
    return params
  return scan_params(params, cfg) if cfg.scan_layers else unscan_params(params, cfg)
