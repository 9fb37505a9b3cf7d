"""orbax checkpoints of a stage: train state + data iterator state + memory config.

One CheckpointManager per stage under ``<workdir>/checkpoints/<stage>``. Each step saves
(STYLE practice 10) the train state (params, optimizer state, step), the data
iterator's state (JSON) so a resumed run sees exactly the batches it would have seen,
and a JSON "meta" record: the model config (incl. the memory layout), the stage, and
the training step, which is what a memory bank built from these params must match.
Saves are async; ``max_to_keep`` bounds disk.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from m3jax.model.config import ModelConfig
from m3jax.train import paths


def model_config_json(cfg: ModelConfig) -> dict:
  d = dataclasses.asdict(cfg)
  for key in ("dtype", "param_dtype"):
    d[key] = jax.numpy.dtype(d[key]).name
  d["memory"]["memory_layers"] = list(d["memory"]["memory_layers"])
  return d


class Checkpointer:
  """A stage's checkpoint directory."""

  def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
    self.directory = paths.absolute(directory)  # gs://… stays a bucket path
    self._mngr = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save
      ),
    )

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._mngr.all_steps())

  def save(self, step: int, state, data_state: dict, meta: dict) -> None:
    self._mngr.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state),
        meta=ocp.args.JsonSave(meta),
      ),
      force=True,
    )

  def restore(self, abstract_state, step: int | None = None) -> tuple[Any, dict, dict]:
    """(state, data_state, meta) at ``step`` (default: latest), laid out like the target."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    out = self._mngr.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore(),
      ),
    )
    return out["state"], out["data"], out["meta"]

  def read_meta(self, step: int | None = None) -> dict:
    step = self.latest_step() if step is None else step
    return self._mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def step_path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))  # posix join: also right for gs://

  def wait(self) -> None:
    self._mngr.wait_until_finished()

  def close(self) -> None:
    self._mngr.wait_until_finished()
    self._mngr.close()


class PreemptionGuard:
  """Knows when to save a final checkpoint and stop, on every host at the same step.

  One process: SIGTERM sets a flag (installed from the main thread only; the previous
  handler is restored on exit). Several processes (``jax.distributed`` initialized):
  JAX's preemption service owns SIGTERM, propagates a notice from any host to all, and
  ``multihost_utils.reached_preemption_sync_point`` turns true on every host at the
  same step, so all hosts save that step. Call :meth:`reached` once per step.
  """

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    self.requested = True

  def reached(self, step: int) -> bool:
    """Whether to save ``step`` and stop (agreed across hosts; False without a notice)."""
    return self.requested or multihost_utils.reached_preemption_sync_point(step)

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False


def _resolve_step_dir(path: str) -> str:
  """A step directory from a step dir, a stage dir (latest step) or a workdir (last stage)."""
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, "state")):
    return path
  steps = [d for d in os.listdir(path) if d.isdigit()] if os.path.isdir(path) else []
  if steps:
    return os.path.join(path, max(steps, key=int))
  stages_root = os.path.join(path, "checkpoints")
  if os.path.isdir(stages_root):
    # The stage trained last: the one whose latest step directory is newest.
    cands = [
      _resolve_step_dir(os.path.join(stages_root, s))
      for s in os.listdir(stages_root)
      if any(d.isdigit() for d in os.listdir(os.path.join(stages_root, s)))
    ]
    if cands:
      return max(cands, key=lambda p: os.path.getmtime(p))
  raise FileNotFoundError(
    f"no m3jax checkpoint under {path} (give a workdir, "
    "<workdir>/checkpoints/<stage>, or a step directory)"
  )


def restore_params(path: str, model_cfg: ModelConfig | None = None):
  """(params as device arrays, step) of a checkpoint, without the optimizer state.

  The one parameter loader (eval, generate, build-memory, probes). ``path``: a train
  workdir (the stage trained last), a stage directory (its latest step) or a step
  directory. Restores the saved ``state`` item as plain numpy (no abstract target), so it
  works whatever the optimizer state looks like and on any device topology. With
  ``model_cfg``, parameter shapes are checked against that model first (a clear error
  instead of a shape mismatch deep in ``apply``). ``step`` is the stage's step (what a
  memory bank manifest records).
  """
  import numpy as np

  step_dir = _resolve_step_dir(path)
  state_dir = os.path.join(step_dir, "state")
  reader = ocp.PyTreeCheckpointer()
  meta = reader.metadata(state_dir)
  meta = getattr(meta, "item_metadata", meta)
  meta = getattr(meta, "tree", meta)
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
  params = reader.restore(state_dir, restore_args=args)["params"]
  if model_cfg is not None:
    _check_shapes(params, model_cfg, step_dir)
  return jax.tree.map(jax.numpy.asarray, params), int(os.path.basename(step_dir))


def _check_shapes(params, model_cfg: ModelConfig, where: str) -> None:
  import jax.numpy as jnp
  from m3jax.model.transformer import Transformer

  boxed = jax.eval_shape(
    Transformer(model_cfg).init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32)
  )["params"]
  is_box = lambda x: hasattr(x, "unbox")
  want = jax.tree.map(
    lambda x: x.unbox(apply_constraint=False) if is_box(x) else x, boxed, is_leaf=is_box
  )
  got = {
    jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_flatten_with_path(params)[0]
  }
  exp = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_flatten_with_path(want)[0]}
  bad = sorted(k for k in set(got) | set(exp) if got.get(k) != exp.get(k))
  if bad:
    raise ValueError(
      f"{where} holds parameters of another model ({len(bad)} differ, e.g. "
      f"{bad[0]}: checkpoint {got.get(bad[0])} vs config {exp.get(bad[0])}); "
      "load it with the config it was trained with (its workdir's config.json)"
    )
