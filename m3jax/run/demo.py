"""The end-to-end demo, importable from a notebook: ``run_demo(config, workdir)``.

prepare data + vocabulary -> stage 1 (no memory) -> stage 2 (live memories) -> encode the
knowledge base with the final model into a TensorStore bank + ScaNN index -> evaluate
(QA on held-out facts under five conditions, perplexity, throughput, attribution) ->
table, plots, ``<workdir>/eval/demo.json`` (``make demo`` writes experiments/results/). Every step is a call into the library;
this file only wires them (and is the place to read the order of things).
"""

from __future__ import annotations

import os
import time

from m3jax.run.loading import (
  TrainedRun,
  build_bank_for,
  evaluate_run,
  kb_references,
  load_trained_params,
)

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

  for name, steps in zip(config.train.stage_order, QUICK["train_steps"]):
    stage = config.train.stages[name]
    resize_stage(stage, min(int(stage["steps"]), steps))
  config.train.checkpoint_every = min(int(config.train.checkpoint_every), 20)
  ev = config.eval
  ev.num_questions = min(int(ev.num_questions), QUICK["num_questions"])
  ev.perplexity_sequences = min(int(ev.perplexity_sequences), QUICK["perplexity_sequences"])
  b, p, n, r = QUICK["speed"]
  ev.speed_batch, ev.speed_prompt_tokens = min(ev.speed_batch, b), min(ev.speed_prompt_tokens, p)
  ev.speed_new_tokens, ev.speed_runs = min(ev.speed_new_tokens, n), min(ev.speed_runs, r)
  return config


def run_demo(
  config,
  workdir: str,
  *,
  quick: bool = False,
  results_path: str | None = None,
  plot_dir: str | None = None,
  skip_train: bool = False,
  progress: bool = True,
  allow_stale_bank: bool = False,
) -> dict:
  """Runs everything; returns the results dict (also written as JSON)."""
  from m3jax.data.config import data_config_from
  from m3jax.data.prepare import load_vocab, prepare_data
  from m3jax.evaluate import report
  from m3jax.memory.build import served_configs
  from m3jax.run.config import build
  from m3jax.train.workdir import content_addressed

  t0 = time.perf_counter()
  config = apply_quick(config, quick)
  build(config)  # every section validated before any work
  content_addressed(config)
  cfg, _ = served_configs(config)
  ev = report.eval_config_from(config.get("eval"))
  results_path = results_path or ev.results_path or os.path.join(workdir, "eval", "demo.json")
  plot_dir = plot_dir or ev.plot_dir or os.path.join(workdir, "eval", "plots")
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
    from m3jax.run.training_eval import training_evaluators
    from m3jax.train.loop import train
    from m3jax.train.preempted import require_finished

    summary = require_finished(train(config, workdir, evaluators=training_evaluators(config)))
  t = lap("train", t)
  params, step = load_trained_params(config, workdir)
  refs = kb_references(paths, vocab, cfg.memory.ref_len)
  bank, embedder, retriever = build_bank_for(
    config, cfg, params, refs, workdir, step, progress, vocab=vocab, allow_stale=allow_stale_bank
  )
  t = lap("build_bank", t)
  run = TrainedRun(
    cfg, paths, vocab, params, step, refs, bank, embedder, retriever, data_cfg.seq_len
  )
  res = evaluate_run(
    run,
    ev,
    plot_dir=plot_dir,
    progress=progress,
    metrics_jsonl=os.path.join(workdir, "metrics.jsonl"),
  )
  lap("evaluate", t)
  res.update(
    {
      "config": config.get("variant", ""),
      "quick": quick,
      "workdir": os.path.abspath(workdir),
      "checkpoint_step": step,
      "num_references": len(refs),
      "train_final_losses": (summary or {}).get("final_losses"),
      "timings_s": timings,
      "machine": report.machine(),
      "wall_seconds": round(time.perf_counter() - t0, 1),
    }
  )
  report.write_json(results_path, res)
  report.write_html(os.path.splitext(results_path)[0] + ".html", res, f"m3jax demo {workdir}")
  print(report.table(res))
  print(f"wall {res['wall_seconds']} s; results -> {results_path}; plots -> {plot_dir}")
  return res
