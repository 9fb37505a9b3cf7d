"""The end-to-end demo, importable from a notebook: ``run_demo(config, workdir)``.

prepare data + vocabulary -> stage 1 (no memory) -> stage 2 (live memories) -> encode the
knowledge base with the final model into a TensorStore bank + ScaNN index -> evaluate
(QA on held-out facts under five conditions, perplexity, throughput, attribution) ->
table, plots, ``experiments/results/demo.json``. Every step is a call into the library;
this file only wires them (and is the place to read the order of things).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import numpy as np

QUICK = {
    # ``--quick``: a shortened run that still exercises every step.
    "train_steps": (40, 20),
    "num_questions": 48,
    "perplexity_sequences": 8,
    "speed": (8, 64, 64, 2),
}


def apply_quick(config, quick: bool):
  """Shrinks training and evaluation in place (``--quick``; the tiny config is already)."""
  if not quick:
    return config
  from m3jax.train.stages import resize_stage
  for stage, steps in zip(config.train.stages, QUICK["train_steps"]):
    resize_stage(stage, min(int(stage["steps"]), steps))
  config.train.checkpoint_every = min(int(config.train.checkpoint_every), 20)
  ev = config.eval
  ev.num_questions = min(int(ev.num_questions), QUICK["num_questions"])
  ev.perplexity_sequences = min(int(ev.perplexity_sequences), QUICK["perplexity_sequences"])
  b, p, n, r = QUICK["speed"]
  ev.speed_batch, ev.speed_prompt_tokens = min(ev.speed_batch, b), min(ev.speed_prompt_tokens, p)
  ev.speed_new_tokens, ev.speed_runs = min(ev.speed_new_tokens, n), min(ev.speed_runs, r)
  return config


def load_trained_params(config, workdir: str):
  """(params as device arrays, checkpoint step) of the last stage's latest checkpoint.

  Local helper until the trainer exposes one. Restores the saved ``state`` item as plain
  numpy (no abstract target), so it works whatever the optimizer state looks like and on
  any device topology, and keeps only the params.
  """
  import orbax.checkpoint as ocp
  from m3jax.model.config import model_config_from
  from m3jax.train.checkpoint import Checkpointer
  from m3jax.train.loop import stage_dir
  from m3jax.train.stages import stages_from
  cfg = model_config_from(config.model)
  stages = stages_from(config.train.stages, has_memory_layers=bool(cfg.memory.memory_layers))
  directory = stage_dir(workdir, stages[-1])
  ckpt = Checkpointer(directory, async_save=False)
  step = ckpt.latest_step()
  path = ckpt.step_path(step) if step is not None else None
  ckpt.close()
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {directory}; train first (python -m m3jax "
                            "train) or run the demo without --skip-train")
  state_dir = os.path.join(path, "state")
  reader = ocp.PyTreeCheckpointer()
  meta = reader.metadata(state_dir)
  meta = getattr(meta, "item_metadata", meta)
  meta = getattr(meta, "tree", meta)
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
  state = reader.restore(state_dir, restore_args=args)
  return jax.tree.map(jax.numpy.asarray, state["params"]), int(step)


@dataclasses.dataclass
class TrainedRun:
  """A trained workdir ready to evaluate: its data, last params, and their bank + index."""
  cfg: Any
  paths: Any
  vocab: Any
  params: Any
  step: int
  refs: list
  bank: Any
  embedder: Any
  retriever: Any


def load_trained_run(config, workdir: str, progress: bool = True) -> TrainedRun:
  """Prepares the data (a no-op when prepared), restores the last stage's params, and opens
  (or builds) the bank of that checkpoint: what ``m3jax eval`` and the probes start from."""
  from m3jax.data.config import data_config_from
  from m3jax.data.prepare import load_vocab, prepare_data
  from m3jax.model.config import model_config_from
  cfg = model_config_from(config.model)
  paths = prepare_data(config.data)
  vocab = load_vocab(data_config_from(config.data), paths)
  params, step = load_trained_params(config, workdir)
  refs = kb_references(paths, vocab, cfg.memory.ref_len)
  bank, embedder, retriever = build_bank_for(config, cfg, params, refs, workdir, step,
                                             progress)
  return TrainedRun(cfg, paths, vocab, params, step, refs, bank, embedder, retriever)


def kb_references(paths, vocab, ref_len: int):
  """Every KB line as one reference (the data pipeline's convention: truncated at ref_len)."""
  from m3jax.data.references import Reference
  from m3jax.data.sources import read_jsonl
  records = read_jsonl(paths.references, "references")
  flat, offsets = np.load(paths.ref_tokens), np.load(paths.ref_offsets)
  if len(offsets) - 1 != len(records):
    raise ValueError(f"{paths.ref_tokens} does not match {paths.references}; re-run "
                     "prepare_data")
  return [Reference(r["id"], r["text"], tuple(int(t) for t in
                                              flat[offsets[i]:min(offsets[i + 1],
                                                                  offsets[i] + ref_len)]))
          for i, r in enumerate(records)]


def run_demo(config, workdir: str, *, quick: bool = False, results_path: str | None = None,
             plot_dir: str | None = None, skip_train: bool = False,
             progress: bool = True) -> dict:
  """Runs everything; returns the results dict (also written as JSON)."""
  from m3jax.data.config import data_config_from
  from m3jax.data.prepare import load_vocab, prepare_data
  from m3jax.evaluate import evaluation, report
  from m3jax.model.config import model_config_from
  t0 = time.perf_counter()
  config = apply_quick(config, quick)
  cfg = model_config_from(config.model)
  ev = report.eval_config_from(config.get("eval"))
  results_path = results_path or ev.results_path
  plot_dir = plot_dir or ev.plot_dir
  timings = {}

  def lap(name, since):
    timings[name] = round(time.perf_counter() - since, 2)
    return time.perf_counter()

  t = time.perf_counter()
  data_cfg = data_config_from(config.data)
  paths = prepare_data(config.data)
  vocab = load_vocab(data_cfg, paths)
  t = lap("prepare_data", t)
  summary = None
  if not skip_train:
    from m3jax.train.loop import train
    summary = train(config, workdir)
  t = lap("train", t)
  params, step = load_trained_params(config, workdir)
  refs = kb_references(paths, vocab, cfg.memory.ref_len)
  bank, embedder, retriever = build_bank_for(config, cfg, params, refs, workdir, step,
                                             progress)
  t = lap("build_bank", t)
  res = evaluation.evaluate_all(cfg, params, vocab, paths, refs, bank, embedder, retriever,
                                ev, plot_dir=plot_dir, progress=progress,
                                metrics_jsonl=os.path.join(workdir, "metrics.jsonl"))
  lap("evaluate", t)
  res.update({
      "config": config.get("variant", ""), "quick": quick, "workdir": os.path.abspath(workdir),
      "checkpoint_step": step, "num_references": len(refs),
      "train_final_losses": (summary or {}).get("final_losses"),
      "timings_s": timings, "machine": report.machine(),
      "wall_seconds": round(time.perf_counter() - t0, 1),
  })
  report.write_json(results_path, res)
  print(report.table(res))
  print(f"wall {res['wall_seconds']} s; results -> {results_path}; plots -> {plot_dir}")
  return res


def build_bank_for(config, cfg, params, refs, workdir, step, progress=True,
                   allow_stale=False):
  """The bank of this checkpoint (rebuilt when the checkpoint changed), and its index."""
  from m3jax.memory.build import bank_config_from, build_bank, load_index
  from m3jax.memory.fingerprint import params_fingerprint
  from m3jax.memory.store import MemoryBank, read_manifest
  bank_cfg = bank_config_from(config.get("bank"))
  url = bank_cfg.url or os.path.join(os.path.abspath(workdir), f"bank-step{step}")
  if MemoryBank.exists(url) and read_manifest(url).get("complete") and os.path.exists(
      os.path.join(url, "index", "index.json")):
    bank = MemoryBank.open(url, model_cfg=cfg, checkpoint_step=step,
                           params_fingerprint=params_fingerprint(params),
                           allow_stale=allow_stale,
                           pq_subspaces=bank_cfg.pq_subspaces, cache_size=bank_cfg.cache_size)
    embedder, retriever = load_index(os.path.join(url, "index"), bank)
    return bank, embedder, retriever
  bank = build_bank(params, cfg, refs, url, bank_cfg=bank_cfg, checkpoint_step=step,
                    progress=progress)
  embedder, retriever = bank.index
  return bank, embedder, retriever
