"""The training loop: one loop, a list of StageSpecs (STYLE practices 9, 10, 13).

``train(config, workdir) -> summary`` is the Python API (the demo and notebooks call
it); ``python -m m3jax train`` is a thin wrapper. Layout of a workdir:

  metrics.jsonl                 one record per step, all stages
  checkpoints/<stage>/<step>/   orbax: state, data iterator state, meta
  tensorboard/, losses.png

Re-running on the same workdir resumes: completed stages are skipped, an interrupted
stage restores its latest checkpoint (params, optimizer, data position) and replays
the exact same batches, so losses match the uninterrupted run bitwise on CPU. The data
is one stream across stages: a stage with ``init_from="previous"`` restores the data
position saved with the previous stage's last checkpoint, so stage 2's first batch is
the one an uninterrupted iterator would give after stage 1's last.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np

from m3jax import sharding
from m3jax.model.config import ModelConfig, model_config_from
from m3jax.train import distributed, paths
from m3jax.train.config import STEP, train_keys, validate
from m3jax.train.workdir import content_addressed, record_run, start_run
from m3jax.train.checkpoint import Checkpointer, PreemptionGuard, model_config_json
from m3jax.train.metrics import MetricsLogger, plot_losses, read_jsonl
from m3jax.train.optimizer import schedule
from m3jax.train.stages import StageSpec
from m3jax.train.state import abstract_state, create_train_state, fresh_state_from_params
from m3jax.train.step import batch_shardings, cached_memory_mass_probe, cached_train_step
from m3jax.train.data_source import make_iterator


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN/Inf loss; the last good checkpoint is kept."""


# A hook is called after every step as hook(stage_name, step); raising stops training.
Hook = Callable[[str, int], None]
# An evaluator is called every train.eval_every steps as evaluator(params) -> {name: value};
# its values join the held-out losses in eval_metrics.jsonl and TensorBoard's eval/ tags.
# Layers above training inject them (QA multiple choice: m3jax.run.training_eval).
Evaluator = Callable[[Any], dict]


def resolve_seq_len(config) -> int:
  """The data section owns the sequence length (``train.fallback_seq_len`` without one)."""
  if "data" in config:
    return int(config.data.seq_len)
  return int(config.train.fallback_seq_len)


def make_mesh_from(config):
  sh = config.sharding
  return sharding.make_mesh(tuple(sh.mesh_shape), tuple(sh.mesh_axes)), sh.rules


def stage_dir(workdir: str, stage: StageSpec) -> str:
  return os.path.join(paths.absolute(workdir), "checkpoints", stage.name)


def _check_shapes(cfg: ModelConfig, stage: StageSpec, seq_len: int, batch: int, mesh):
  if stage.use_memory and seq_len % cfg.memory.chunk_len:
    raise ValueError(
      f"stage {stage.name!r} uses memory: seq_len={seq_len} must be a "
      f"multiple of model.memory.chunk_len={cfg.memory.chunk_len}"
    )
  dp = mesh.shape.get("data", 1) * mesh.shape.get("fsdp", 1)
  if batch % dp:
    raise ValueError(
      f"config.train.batch_size={batch} is not divisible by the "
      f"data×fsdp mesh size {dp}; fix config.train.batch_size or "
      "config.sharding.mesh_shape"
    )


class _Run:
  """State shared by the stages of one ``train`` call."""

  def __init__(self, config, workdir, hooks, data_factory, evaluators=()):
    self.config, self.workdir, self.hooks = config, paths.absolute(workdir), tuple(hooks)
    self.evaluators = tuple(evaluators)
    self.tc = validate(config)  # every type and range, before any work
    self.cfg = model_config_from(config.model)
    self.stages = self.tc.stages
    self.seq_len = resolve_seq_len(config)
    self.mesh, rules = make_mesh_from(config)
    self.rules = sharding.normalize_rules(rules)
    for stage in self.stages:
      _check_shapes(self.cfg, stage, self.seq_len, int(self.tc.batch_size), self.mesh)
    self.data_factory = data_factory or make_iterator
    self.offsets = np.cumsum([0] + [s.steps for s in self.stages]).tolist()
    paths.makedirs(self.workdir)
    lead = jax.process_index() == 0  # one host writes metrics and shows progress
    self.logger = MetricsLogger(
      self.workdir,
      tensorboard=bool(self.tc.tensorboard) and lead,
      progress_bar=bool(self.tc.progress_bar) and lead,
      hparams=_hparams(config),
      enabled=lead,
    )
    self._held_out = None

  # ------------------------------------------------------------------------- state init
  def _initial_state(self, index: int, stage: StageSpec, tx, shardings):
    """-> (state, data state to continue from or None).

    A stage that starts from the previous one also continues its data stream (the
    iterator position is in the same checkpoint), so it never replays stage 1's batches.
    """
    if stage.init_from == "":
      rng = jax.random.key(int(self.config.seed))
      state, _ = create_train_state(self.cfg, tx, self.mesh, self.rules, rng)
      return state, None
    source = (
      stage_dir(self.workdir, self.stages[index - 1])
      if stage.init_from == "previous"
      else stage.init_from
    )
    src = Checkpointer(source, async_save=False)
    try:
      if src.latest_step() is None:
        raise FileNotFoundError(
          f"stage {stage.name!r}: init_from={stage.init_from!r} but {source} holds no checkpoint"
        )
      prev, data_state, _ = src.restore(abstract_state(self.cfg, tx, self.mesh, self.rules))
    finally:
      src.close()
    carry = data_state if stage.init_from == "previous" else None
    if stage.reset_optimizer:
      return fresh_state_from_params(prev.params, tx, shardings), carry
    return prev.replace(step=jax.numpy.zeros((), jax.numpy.int32)), carry

  # ------------------------------------------------------------------------- one stage
  def run_stage(self, index: int, guard: PreemptionGuard) -> dict:
    stage, tc, cfg = self.stages[index], self.tc, self.cfg
    batch = int(tc.batch_size)
    hyper = (tuple((k, getattr(tc, k)) for k in train_keys(STEP)), int(self.config.seed))
    step_fn, tx, shardings = cached_train_step(cfg, stage, hyper, self.mesh, self.rules)
    ckpt = Checkpointer(
      stage_dir(self.workdir, stage),
      max_to_keep=int(tc.max_to_keep),
      async_save=bool(tc.async_checkpoint),
    )
    distributed.local_batch_size(batch)  # validates divisibility by the process count
    iterator = self.data_factory(
      self.config,
      stage,
      batch_size=batch,
      seq_len=self.seq_len,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
    )
    meta = {
      "model": model_config_json(cfg),
      "stage": stage.name,
      "stage_spec": {k: getattr(stage, k) for k in stage.__dataclass_fields__},
      "seq_len": self.seq_len,
    }
    start = ckpt.latest_step()
    later = {s.name for s in self.stages[index + 1 :]}
    if start is not None:
      state, data_state, _ = ckpt.restore(abstract_state(cfg, tx, self.mesh, self.rules))
      iterator.restore(data_state)
    else:
      start = 0
      state, carried = self._initial_state(index, stage, tx, shardings)
      if carried is not None:
        iterator.restore(carried)
    if start < stage.steps:
      # Forget metrics of steps this run will redo (after the restored checkpoint).
      self.logger.rewind(
        lambda r: r["stage"] not in later and (r["stage"] != stage.name or r["step"] <= start)
      )
    result = {"checkpoint_dir": ckpt.directory, "steps": stage.steps, "preempted": False}
    try:
      if start < stage.steps:
        self._steps(stage, index, step_fn, state, iterator, ckpt, meta, start, guard, result)
    finally:
      ckpt.close()
    latest = ckpt.latest_step()
    result["latest_checkpoint"] = ckpt.step_path(latest) if latest is not None else None
    losses = [r["loss"] for r in read_jsonl(self.logger.path) if r["stage"] == stage.name]
    result["final_loss"] = losses[-1] if losses else None
    return result

  def _steps(self, stage, index, step_fn, state, iterator, ckpt, meta, start, guard, result):
    tc = self.tc
    log_every, ckpt_every = max(int(tc.log_every), 1), max(int(tc.checkpoint_every), 1)
    with sharding.activate(self.mesh, self.rules):
      b_sh = batch_shardings(stage, self.mesh, self.rules)
      lr_of = schedule(stage)
      self.logger.start_stage(stage.name, stage.steps, start)
      pending, t_last = [], time.perf_counter()
      try:
        for step in range(start + 1, stage.steps + 1):
          batch = distributed.global_batch(next(iterator), b_sh)
          # The memory mass is a separate forward at logging steps (the train step's
          # fused attention never forms the probabilities), run on the step's inputs.
          mass = self._memory_mass(stage, state, batch) if step % log_every == 0 else None
          state, metrics = step_fn(state, batch, np.float32(lr_of(step - 1)))
          if mass is not None:
            metrics = {**metrics, "memory_mass": mass}
          pending.append((step, metrics))
          for hook in self.hooks:
            hook(stage.name, step)
          if tc.eval_every and step % tc.eval_every == 0:
            self._evaluate(stage, index, step, state.params)
          stop = guard.reached(step)
          counted = self.offsets[index] + step if tc.checkpoint_global else step
          save = counted % ckpt_every == 0 or step == stage.steps or stop
          if save or step % log_every == 0:
            t_last = self._flush(stage, index, pending, t_last)
            pending = []
          if save:
            ckpt.save(step, state, iterator.state(), {**meta, "step": step})
          if stop:
            ckpt.wait()
            result["preempted"] = True
            if jax.process_index() == 0:
              print(
                f"[m3jax.train] SIGTERM: saved step {step} of stage {stage.name!r} to "
                f"{ckpt.directory}; re-run the same command to resume"
              )
            return
      finally:
        self.logger.end_stage()

  def _evaluate(self, stage, index, step, params) -> None:
    """Held-out loss with and without memory (m3jax.train.periodic_eval), then the
    injected evaluators (e.g. QA multiple choice), into one record."""
    if jax.process_count() > 1:
      return
    if self._held_out is None:
      from m3jax.train.periodic_eval import HeldOutLoss

      self._held_out = HeldOutLoss(
        self.config,
        self.cfg,
        seq_len=self.seq_len,
        batch_size=int(self.tc.batch_size),
        num_batches=int(self.tc.eval_batches),
      )
    record = {
      "stage": stage.name,
      "step": step,
      "global_step": self.offsets[index] + step,
      **self._held_out(params),
    }
    for evaluator in self.evaluators:
      record.update(evaluator(params))
    self.logger.write_eval(record)

  def _memory_mass(self, stage, state, batch):
    if not stage.use_memory:
      return np.zeros((0,), np.float32)
    probe = cached_memory_mass_probe(self.cfg, stage, self.mesh, self.rules, int(self.config.seed))
    return probe(state, batch)

  def _flush(self, stage, index, pending, t_last) -> float:
    """Fetches pending device metrics, writes them, and applies the NaN guard."""
    fetched = jax.device_get([m for _, m in pending])
    now = time.perf_counter()
    tokens = sum(float(m["tokens"]) for m in fetched)
    tok_s = tokens / max(now - t_last, 1e-9)
    records = []
    bad = None
    for (step, _), m in zip(pending, fetched):
      loss = float(m["loss"])
      records.append(
        {
          "stage": stage.name,
          "step": step,
          "global_step": self.offsets[index] + step,
          "loss": loss,
          "ce": float(m["ce"]),
          "grad_norm": float(m["grad_norm"]),
          "lr": float(m["lr"]),
          "tokens_per_s": tok_s,
        }
      )
      if "exit_ce" in m:  # train.memory_exit_loss > 0, stages with memory
        records[-1]["exit_ce"] = float(m["exit_ce"])
      if "memory_mass" in m:  # logging steps only
        records[-1]["memory_mass"] = np.asarray(m["memory_mass"]).tolist()
      if bad is None and not np.isfinite(loss):
        bad = (step, loss)
    self.logger.write(records)
    if bad is not None and self.tc.nan_guard:
      raise NonFiniteLossError(
        f"stage {stage.name!r}: loss is {bad[1]} at step {bad[0]}; training stopped and "
        f"the last good checkpoint is kept in {stage_dir(self.workdir, stage)}. Resume "
        "from it with a smaller peak_lr (config.train.stages.<name>.peak_lr) or stronger "
        "clipping (config.train.grad_clip)."
      )
    return now

  # ------------------------------------------------------------------------- all stages
  def run(self) -> dict:
    summary = {
      "workdir": self.workdir,
      "metrics": self.logger.path,
      "stages": {},
      "preempted": False,
    }
    try:
      with PreemptionGuard() as guard:
        for i, stage in enumerate(self.stages):
          res = self.run_stage(i, guard)
          summary["stages"][stage.name] = res
          if res["preempted"]:
            summary["preempted"] = True
            break
    finally:
      self.logger.close()
    if self.tc.plot and not summary["preempted"] and jax.process_index() == 0:
      summary["plot"] = plot_losses(self.logger.path, os.path.join(self.workdir, "losses.png"))
    summary["final_losses"] = {k: v["final_loss"] for k, v in summary["stages"].items()}
    return summary


def _hparams(config) -> dict:
  """The run config flattened to scalars (TensorBoard's hyperparameter table)."""
  flat = {}

  def walk(node, prefix):
    for k, v in node.items() if hasattr(node, "items") else []:
      key = f"{prefix}{k}"
      if hasattr(v, "items"):
        walk(v, key + ".")
      elif isinstance(v, (bool, int, float, str)):
        flat[key] = v
      elif isinstance(v, tuple) and all(isinstance(e, (int, float, str)) for e in v):
        flat[key] = str(v)

  walk(config, "")
  return flat


def train(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  hooks: Sequence[Hook] = (),
  data_factory=None,
  force: bool = False,
  evaluators: Sequence[Evaluator] = (),
) -> dict:
  """Runs (or resumes) every stage of ``config.train.stages`` in ``workdir``.

  Returns {"final_losses": {stage: loss}, "stages": {stage: {"checkpoint_dir",
  "latest_checkpoint", "final_loss", "steps", "preempted"}}, "metrics": jsonl path,
  "plot": png path (when config.train.plot), "preempted": bool, "workdir"}.
  ``data_factory(config, stage, *, batch_size, seq_len, process_index, process_count)``
  (global batch_size; returns this host's iterator) overrides the batch source
  (default: config.train.data_source). ``evaluators``: callables ``f(params) -> dict``
  run every ``train.eval_every`` steps beside the held-out loss (their values are
  logged in the same record: eval_metrics.jsonl, TensorBoard ``eval/``).

  Every config value is validated first. ``data.data_dir`` is made content-addressed
  (``<root>/<data hash>``, in place) and the config recorded as
  ``<workdir>/config.json``; resuming a workdir with a config that changes the run is
  refused (``force``: move the old run aside and start anew); m3jax.train.workdir.
  """
  distributed.maybe_initialize(bool(config.train.get("multihost", False)))
  validate(config)
  content_addressed(config)
  if jax.process_index() == 0:
    start_run(workdir, config, force=force)
  summary = _Run(config, workdir, hooks, data_factory, evaluators).run()
  if jax.process_index() == 0:
    summary["run"] = record_run(workdir, config)
  return summary
