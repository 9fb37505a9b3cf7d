"""Multi-host set-up: ``jax.distributed.initialize`` when asked, host-local batches.

Each process reads its own slice of the global batch (B / process_count rows) and
``jax.make_array_from_process_local_data`` stitches the slices into one global array
laid out by the batch sharding. On one process this is a plain device_put.
"""

from __future__ import annotations

import os

import jax
import numpy as np

_COORDINATOR_VARS = (
  "JAX_COORDINATOR_ADDRESS",
  "COORDINATOR_ADDRESS",
  "MEGASCALE_COORDINATOR_ADDRESS",
)
_SIZE_VARS = ("SLURM_JOB_NUM_NODES", "OMPI_COMM_WORLD_SIZE")


def _wanted(multihost: bool) -> bool:
  """The flag, a coordinator address, several TPU hosts, or a multi-node launcher."""
  if multihost or any(os.environ.get(k) for k in _COORDINATOR_VARS):
    return True
  if "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
    return True
  return any(
    os.environ.get(k, "1").strip().isdigit() and int(os.environ[k]) > 1
    for k in _SIZE_VARS
    if k in os.environ
  )


_initialized = False


def maybe_initialize(multihost: bool = False) -> bool:
  """Initializes the JAX distributed runtime once, if the flag or the environment says so.

  Must run before any JAX computation. Returns whether this is a multi-process run.
  """
  global _initialized
  if not _initialized and _wanted(multihost):
    jax.distributed.initialize()  # reads coordinator/process ids from env or TPU metadata
    _initialized = True
  return jax.process_count() > 1


def local_batch_size(global_batch: int) -> int:
  n = jax.process_count()
  if global_batch % n:
    raise ValueError(
      f"config.train.batch_size={global_batch} is not divisible by the {n} processes"
    )
  return global_batch // n


def global_batch(local: dict[str, np.ndarray], shardings: dict) -> dict[str, jax.Array]:
  """Host-local numpy slices -> global jax.Arrays on the mesh (only keys in shardings)."""
  out = {}
  n = jax.process_count()
  for key, sh in shardings.items():
    if key not in local:
      raise KeyError(
        f"the data iterator's batch lacks {key!r} (has {sorted(local)}); "
        "memory stages need ref_tokens and ref_lengths"
      )
    x = np.asarray(local[key])
    out[key] = jax.make_array_from_process_local_data(sh, x, (x.shape[0] * n,) + x.shape[1:])
  return out
