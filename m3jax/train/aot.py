"""Ahead-of-time compilation of the real train and decode steps for a TPU topology.

No TPU is needed: with ``jax[tpu]`` installed (``make tpu-venv``), libtpu describes any
slice by name (``jax.experimental.topologies.get_topology_desc``), and
``jit(step).lower(abstract args with NamedShardings on that slice's mesh).compile()``
returns the XLA:TPU executable a pod would run (MaxText's ``train_compile.py`` checks
its configs the same way). Its ``memory_analysis()`` says what each chip must hold and
``cost_analysis()`` what it computes, before anyone pays for the pod.

The train step is ``m3jax.train.step.make_train_step``: the one the loop runs, with
the optimizer, live reference encoding in stage 2 and gradient accumulation over
microbatches. The decode step is ``Transformer.step`` for one token per row with the
KV cache (memories resident) donated, the body of the Generator's decode loop.
``m3jax.train.aot_report`` reads the compiled executables.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from m3jax import axes, sharding
from m3jax.model.config import ModelConfig
from m3jax.model.transformer import Transformer
from m3jax.train.accumulate import check_divides
from m3jax.train.optimizer import make_optimizer
from m3jax.train.stages import StageSpec
from m3jax.train.state import abstract_state
from m3jax.train.step import batch_shardings, make_train_step, step_options

GiB = 1024**3


@dataclasses.dataclass(frozen=True)
class Chip:
  hbm_bytes: int  # per chip
  peak_bf16_flops: float  # per chip, dense
  accelerator_type: str  # TPU_ACCELERATOR_TYPE pattern ({cores} or {chips})


CHIPS = {
  "v4": Chip(32 * GiB, 275e12, "v4-{cores}"),
  "v5e": Chip(16 * GiB, 197e12, "v5litepod-{chips}"),
  "v5p": Chip(95 * GiB, 459e12, "v5p-{cores}"),
  "v6e": Chip(32 * GiB, 918e12, "v6e-{chips}"),
}
_NAME = re.compile(r"^(v[0-9a-z]+):([0-9]+(?:x[0-9]+)*)$")


@dataclasses.dataclass(frozen=True)
class Topology:
  name: str
  generation: str
  chips: int
  devices: tuple
  chip: Chip

  @property
  def hbm_bytes_per_device(self) -> int:
    return self.chip.hbm_bytes * self.chips // len(self.devices)

  @property
  def peak_flops_per_device(self) -> float:
    return self.chip.peak_bf16_flops * self.chips / len(self.devices)


def for_tpu(cfg: ModelConfig) -> ModelConfig:
  """``attention_impl="auto"`` as a TPU host resolves it (m3jax's flash kernel,
  ``joint_attention.resolve_impl``).

  Compiling runs on a CPU host, where ``auto`` would pick XLA attention and compile a
  program that no TPU run executes; an explicit impl is kept (to compare kernels).
  """
  if cfg.attention_impl == "auto":
    return dataclasses.replace(cfg, attention_impl="flash")
  return cfg


def tpu_topology(name: str) -> Topology:
  """The devices of a TPU slice named like ``v5p:4x4x4`` or ``v5e:16x16``, via libtpu."""
  match = _NAME.match(name)
  examples = "e.g. v5p:4x4x4 (v5p-128), v5e:16x16 (v5e-256), v5e:2x2, v4:2x2x1, v6e:4x4"
  if not match or match.group(1) not in CHIPS:
    raise ValueError(
      f"unknown TPU topology {name!r}: give <generation>:<chips per axis> "
      f"with a generation in {sorted(CHIPS)}, {examples}"
    )
  gen = match.group(1)
  chips = math.prod(int(x) for x in match.group(2).split("x"))
  chip = CHIPS[gen]
  # Quiet libtpu's start-up on a machine with no TPU (it would probe GCE metadata), and
  # let several compiles run at once: only a topology is described, no chip is opened.
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  os.environ.setdefault(
    "TPU_ACCELERATOR_TYPE", chip.accelerator_type.format(chips=chips, cores=2 * chips)
  )
  try:
    from jax.experimental import topologies

    desc = topologies.get_topology_desc(platform="tpu", topology_name=name)
  except Exception as e:  # noqa: BLE001 - libtpu reports bad names as runtime errors
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "libtpu" in msg.lower() or "unknown backend" in msg.lower() or "plugin" in msg.lower():
      raise RuntimeError(
        f"libtpu is not usable from this Python ({msg}); AOT compilation "
        "needs the TPU virtualenv: `make tpu-venv`, then run "
        "`.venv-tpu/bin/python -m m3jax compile ...`"
      ) from e
    raise ValueError(f"libtpu does not know the TPU topology {name!r} ({msg}); {examples}") from e
  return Topology(name, gen, chips, tuple(desc.devices), chip)


def parse_mesh(text: str) -> tuple[int, ...]:
  """``"1,64,1"`` (data, fsdp, tensor; one ``-1`` allowed) -> a shape tuple."""
  try:
    shape = tuple(int(x) for x in text.replace("x", ",").split(","))
  except ValueError:
    raise ValueError(f"--mesh {text!r}: give data,fsdp,tensor sizes, e.g. 1,64,1") from None
  if len(shape) != len(sharding.MESH_AXES) or any(s == 0 or s < -1 for s in shape):
    raise ValueError(
      f"--mesh {text!r}: give {len(sharding.MESH_AXES)} positive sizes "
      f"({','.join(sharding.MESH_AXES)}), e.g. 1,64,1"
    )
  return shape


def default_train_mesh(cfg: ModelConfig, n: int, tensor: int = 1) -> tuple[int, int, int]:
  """FSDP over as many devices as the model width divides, data parallel over the rest
  (after ``tensor`` devices per layer for tensor parallelism)."""
  rest = n // tensor
  fsdp = max(f for f in range(1, rest + 1) if rest % f == 0 and cfg.embed_dim % f == 0)
  return (rest // fsdp, fsdp, tensor)


def train_mesh_candidates(cfg: ModelConfig, n: int) -> list[tuple[int, int, int]]:
  """The meshes ``compile`` tries in order when none is given: the default, then tensor
  parallelism of 2, 4, 8 over the KV heads (each splits a layer's activations, which is
  what a chip with little HBM runs out of first: v5e's 16 GiB in stage 2)."""
  tensors = [t for t in (2, 4, 8) if cfg.num_kv_heads % t == 0 and n % t == 0]
  return [default_train_mesh(cfg, n)] + [default_train_mesh(cfg, n, t) for t in tensors]


def default_decode_mesh(cfg: ModelConfig, n: int, batch: int) -> tuple[int, int, int]:
  """Tensor parallel over the KV heads (at most 8), rows over data, the rest fsdp."""
  tensor = max(
    t for t in range(1, min(cfg.num_kv_heads, 8) + 1) if cfg.num_kv_heads % t == 0 and n % t == 0
  )
  data = math.gcd(batch, n // tensor)
  return (data, n // tensor // data, tensor)


def make_mesh_on(devices, shape, *, what: str) -> jax.sharding.Mesh:
  try:
    return sharding.make_mesh(shape, devices=devices)
  except ValueError as e:
    raise ValueError(
      f"{what} mesh {tuple(shape)} (data, fsdp, tensor) does not fit the "
      f"{len(devices)} devices: {e}. Pass --mesh with sizes that multiply "
      f"to {len(devices)}"
    ) from None


def data_parallel(mesh) -> int:
  return mesh.shape.get("data", 1) * mesh.shape.get("fsdp", 1)


def microbatches_for(global_batch: int, mesh, per_device_batch: int | None) -> int:
  """How many microbatches run ``global_batch`` with ``per_device_batch`` rows per device."""
  dp = data_parallel(mesh)
  if global_batch % dp:
    raise ValueError(
      f"config.train.batch_size={global_batch} does not divide over the "
      f"{dp} data×fsdp devices of mesh {dict(mesh.shape)}; change the batch "
      "or --mesh"
    )
  if per_device_batch is None:
    return 1
  rows = per_device_batch * dp
  if per_device_batch < 1 or global_batch % rows:
    raise ValueError(
      f"--per-device-batch {per_device_batch} × {dp} data×fsdp devices = "
      f"{rows} rows per microbatch does not divide config.train.batch_size="
      f"{global_batch}; pick a divisor of {global_batch // dp}"
    )
  return global_batch // rows


@dataclasses.dataclass
class Compiled:
  """A compiled step and what it took: ``executable`` is a jax.stages.Compiled;
  ``timing``: lower_s, compile_s (wall) and lower_cpu_s, compile_cpu_s."""

  executable: Any
  timing: dict
  mesh: Any
  details: dict


def _lower_and_compile(fn, args, mesh, rules) -> tuple[Any, dict]:
  """The executable, and wall and CPU seconds (all threads) of lowering and compiling.

  CPU seconds do not grow when other jobs share the machine; wall seconds do.
  """
  t0, c0 = time.perf_counter(), time.process_time()
  with sharding.activate(mesh, rules):
    lowered = fn.lower(*args)
  t1, c1 = time.perf_counter(), time.process_time()
  executable = lowered.compile()
  t2, c2 = time.perf_counter(), time.process_time()
  return executable, {
    "lower_s": t1 - t0,
    "compile_s": t2 - t1,
    "lower_cpu_s": c1 - c0,
    "compile_cpu_s": c2 - c1,
  }


def abstract_batch(
  cfg: ModelConfig, stage: StageSpec, batch: int, seq_len: int, mesh, rules
) -> dict:
  """ShapeDtypeStructs (with shardings) of a train batch as the data pipeline yields it."""
  m = cfg.memory
  shapes = {
    "inputs": ((batch, seq_len), jnp.int32),
    "targets": ((batch, seq_len), jnp.int32),
    "loss_mask": ((batch, seq_len), jnp.float32),
    "ref_tokens": ((batch, seq_len // m.chunk_len, m.ref_len), jnp.int32),
    "ref_lengths": ((batch, seq_len // m.chunk_len), jnp.int32),
  }
  return {
    k: jax.ShapeDtypeStruct(shapes[k][0], shapes[k][1], sharding=sh)
    for k, sh in batch_shardings(stage, mesh, rules).items()
  }


def compile_train_step(
  config, cfg: ModelConfig, stage: StageSpec, mesh, *, seq_len: int, microbatches: int
) -> Compiled:
  """Compiles ``make_train_step`` for the config's global batch on ``mesh``."""
  rules = sharding.normalize_rules(config.sharding.rules)
  tc = config.train
  batch = int(tc.batch_size)
  if stage.use_memory and seq_len % cfg.memory.chunk_len:
    raise ValueError(
      f"stage {stage.name!r} uses memory: seq_len={seq_len} must be a "
      f"multiple of model.memory.chunk_len={cfg.memory.chunk_len}"
    )
  micro = check_divides(batch, microbatches, data_parallel(mesh))
  tx = make_optimizer(tc)
  state = abstract_state(cfg, tx, mesh, rules)
  shardings = jax.tree.map(lambda x: x.sharding, state)
  step = make_train_step(
    cfg,
    stage,
    tx,
    mesh=mesh,
    rules=rules,
    state_shardings=shardings,
    seed=int(config.seed),
    **{**step_options(tc), "microbatches": microbatches},
  )
  lr = jax.ShapeDtypeStruct((), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec()))
  args = (state, abstract_batch(cfg, stage, batch, seq_len, mesh, rules), lr)
  executable, timing = _lower_and_compile(step, args, mesh, rules)
  return Compiled(
    executable,
    timing,
    mesh,
    {
      "global_batch": batch,
      "seq_len": seq_len,
      "tokens_per_step": batch * seq_len,
      "microbatches": microbatches,
      "microbatch": micro,
      "per_device_batch": micro // data_parallel(mesh),
      "use_memory": stage.use_memory,
      "encode_grad": stage.encode_grad,
    },
  )


def abstract_params(cfg: ModelConfig, mesh, rules, dtype=None):
  """Params as ShapeDtypeStructs with their shardings (``dtype``: cast, e.g. to serve)."""
  key = jax.random.key(0)
  init = lambda k: Transformer(cfg).init(k, jnp.zeros((1, 8), jnp.int32))["params"]
  with sharding.activate(mesh, rules):
    boxed = jax.eval_shape(init, key)
  shardings = sharding.logical_to_sharding(nn.get_partition_spec(boxed), mesh, rules)
  is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)
  plain = jax.tree.map(
    lambda x: x.unbox(apply_constraint=False) if is_box(x) else x, boxed, is_leaf=is_box
  )
  return jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, dtype or a.dtype, sharding=s), plain, shardings
  )


def compile_decode_step(cfg: ModelConfig, mesh, rules, *, batch: int, max_len: int) -> Compiled:
  """Compiles one decode step (a token per row, cache donated) with bf16-served weights."""
  rules = sharding.normalize_rules(rules)
  dp = data_parallel(mesh)
  if batch % dp:
    raise ValueError(
      f"decode batch {batch} does not divide over the {dp} data×fsdp devices "
      f"of mesh {dict(mesh.shape)}; change --decode-batch or --decode-mesh"
    )
  model = Transformer(cfg)
  params = abstract_params(cfg, mesh, rules, dtype=cfg.dtype)
  p_sh = jax.tree.map(lambda x: x.sharding, params)
  with sharding.activate(mesh, rules):
    cache_shape = jax.eval_shape(
      lambda p: model.apply({"params": p}, batch, max_len, method=Transformer.init_cache), params
    )
  c_sh = sharding.cache_shardings(mesh, rules, smeared_keys=cfg.smeared_keys)
  cache = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), cache_shape, c_sh
  )
  tok_sh = sharding.named(mesh, (axes.BATCH, None), rules)
  tokens = jax.ShapeDtypeStruct((batch, 1), jnp.int32, sharding=tok_sh)

  def decode_step(params, tokens_Bx1, cache):
    return model.apply({"params": params}, tokens_Bx1, cache, method=Transformer.step)

  step = jax.jit(
    decode_step, in_shardings=(p_sh, tok_sh, c_sh), out_shardings=(None, c_sh), donate_argnums=(2,)
  )
  executable, timing = _lower_and_compile(step, (params, tokens, cache), mesh, rules)
  return Compiled(
    executable,
    timing,
    mesh,
    {
      "batch": batch,
      "max_len": max_len,
      "key_slots": cache_shape.k_LxBxSxKxD.shape[2],
      "memory_slots": cache_shape.mem_mask_BxN.shape[1],
      "weights_dtype": jnp.dtype(cfg.dtype).name,
    },
  )
