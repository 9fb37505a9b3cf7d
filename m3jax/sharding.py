"""Mesh construction and logical-axis sharding (pjit semantics on jax.jit + NamedSharding).

Parameters and activations carry logical names (m3jax.axes); the rules that map them onto
mesh axes live in the config (``config.sharding.rules``), so the same code runs on one
CPU and on a pod slice. State is created by shape first: eval_shape -> shardings ->
jit(init, out_shardings=...).
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from m3jax import axes

MESH_AXES = ("data", "fsdp", "tensor")

DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
  (axes.BATCH, ("data", "fsdp")),
  (axes.EMBED, "fsdp"),
  (axes.VOCAB, "tensor"),
  (axes.HEADS, "tensor"),
  (axes.KV_HEADS, "tensor"),
  (axes.MLP, "tensor"),
  (axes.HEAD_DIM, None),
  (axes.LENGTH, None),
  (axes.LAYERS, None),
  (axes.CACHE_LENGTH, None),
  (axes.MEM_LAYERS, None),
  (axes.MEM_CHUNKS, None),
  (axes.MEM_REFS, None),
  (axes.MEM_TOKENS, None),
)


def normalize_rules(rules) -> tuple[tuple[str, Any], ...]:
  """Rules from a config (lists from ConfigDict/JSON) as hashable tuples."""
  out = []
  for name, target in rules:
    if isinstance(target, (list, tuple)):
      target = tuple(target)
    out.append((str(name), target))
  return tuple(out)


def _resolve_shape(shape: Sequence[int], n: int) -> tuple[int, ...]:
  shape = list(shape)
  if shape.count(-1) > 1:
    raise ValueError(f"mesh shape {tuple(shape)}: at most one -1")
  if -1 in shape:
    rest = int(np.prod([s for s in shape if s != -1]))
    if rest <= 0 or n % rest:
      raise ValueError(
        f"mesh shape {tuple(shape)}: the other axes ({rest} devices) do not "
        f"divide the {n} devices; fix config.sharding.mesh_shape"
      )
    shape[shape.index(-1)] = n // rest
  if int(np.prod(shape)) != n:
    raise ValueError(
      f"mesh shape {tuple(shape)} needs {int(np.prod(shape))} devices, "
      f"{n} available; fix config.sharding.mesh_shape"
    )
  return tuple(shape)


def device_grid(
  shape: Sequence[int], devices: Sequence[Any], dcn_shape: Sequence[int] | None = None
) -> np.ndarray:
  """Devices laid out as ``shape``, following the hardware where it has a topology.

  TPU devices: ``mesh_utils.create_device_mesh`` maps the mesh onto the chips' torus so
  neighbouring mesh coordinates are neighbouring chips. Several slices (multislice, the
  devices carry ``slice_index``): ``create_hybrid_device_mesh``, with the slices along
  ``dcn_shape`` (default: all of them on the first, ``data``, axis: only data
  parallelism crosses the slow data-center network). Other devices keep their order.
  """
  devices = list(devices)
  slices = sorted({getattr(d, "slice_index", 0) for d in devices})
  if len(slices) > 1:
    dcn = tuple(dcn_shape) if dcn_shape else (len(slices),) + (1,) * (len(shape) - 1)
    if int(np.prod(dcn)) != len(slices) or any(s % d for s, d in zip(shape, dcn)):
      raise ValueError(
        f"the {len(slices)} slices cannot lay out as dcn shape {dcn} inside "
        f"mesh shape {tuple(shape)}: each mesh axis must be a multiple of "
        "its dcn axis and the dcn axes must multiply to the slice count"
      )
    ici = tuple(s // d for s, d in zip(shape, dcn))
    return mesh_utils.create_hybrid_device_mesh(ici, dcn, devices, allow_split_physical_axes=True)
  if devices[0].platform == "tpu":
    try:
      return mesh_utils.create_device_mesh(tuple(shape), devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError, AssertionError):
      pass  # a shape the torus mapping does not cover: plain device order still works
  return np.asarray(devices).reshape(shape)


def make_mesh(
  shape: Sequence[int],
  axis_names: Sequence[str] = MESH_AXES,
  devices=None,
  dcn_shape: Sequence[int] | None = None,
) -> Mesh:
  """A topology-aware mesh with Auto axis types (logical constraints need Auto axes).

  A ``-1`` in ``shape`` takes all remaining devices. ``devices`` defaults to all
  devices (on a pod slice: every host's); an AOT compile passes a TPU topology's.
  ``dcn_shape``: how slices lay out across mesh axes (see :func:`device_grid`).
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = _resolve_shape(shape, len(devices))
  grid = device_grid(shape, devices, dcn_shape)
  return Mesh(grid, tuple(axis_names), axis_types=(AxisType.Auto,) * len(axis_names))


@contextlib.contextmanager
def activate(mesh: Mesh, rules):
  """Sets the mesh and the logical rules used by ``nn.with_logical_constraint``."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(normalize_rules(rules)):
    yield


def logical_to_sharding(logical_tree, mesh: Mesh, rules):
  """A pytree of logical PartitionSpecs -> NamedShardings on ``mesh``."""
  return nn.logical_to_mesh_sharding(logical_tree, mesh, normalize_rules(rules))


def spec_for(logical_axes: Sequence[str | None], rules) -> PartitionSpec:
  return nn.logical_to_mesh_axes(tuple(logical_axes), normalize_rules(rules))


def named(mesh: Mesh, logical_axes: Sequence[str | None], rules) -> NamedSharding:
  return NamedSharding(mesh, spec_for(logical_axes, rules))


def init_sharded(init_fn, mesh: Mesh, rules, *args):
  """Shape first: eval_shape(init) -> logical specs -> shardings -> jit(init, out_shardings).

  ``init_fn(*args)`` must return boxed (logically partitioned) Flax variables.
  Returns (unboxed variables, their shardings).
  """
  with activate(mesh, rules):
    abstract = jax.eval_shape(init_fn, *args)
    logical = nn.get_partition_spec(abstract)
    shardings = logical_to_sharding(logical, mesh, rules)
    variables = jax.jit(lambda *a: nn.meta.unbox(init_fn(*a)), out_shardings=shardings)(*args)
  return variables, shardings


def memory_shardings(mesh: Mesh, rules):
  """NamedShardings for a MemoryKV's (keys, values, mask)."""
  from m3jax.model.memory_kv import MemoryKV

  kv = named(mesh, axes.MEMORY_KV_AXES, rules)
  return MemoryKV(kv, kv, named(mesh, axes.MEMORY_MASK_AXES, rules))


def cache_shardings(mesh: Mesh, rules, *, smeared_keys: bool = False):
  """NamedShardings for a decoding Cache (``smeared_keys``: the model's config flag)."""
  from m3jax.model.transformer import Cache

  kv = named(mesh, axes.CACHE_KV_AXES, rules)
  last = named(mesh, axes.CACHE_LAST_KEY_AXES, rules) if smeared_keys else None
  return Cache(
    kv, kv, named(mesh, (axes.BATCH,), rules), named(mesh, (axes.BATCH, None), rules), last
  )
