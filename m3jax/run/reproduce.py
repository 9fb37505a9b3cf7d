"""``m3jax reproduce``: a longer run than the demo, with learning curves and the Fig. 11 check.

Two trainings of the same total tokens, each in its own sub-workdir:

* ``two_stage``: the config's stages, the continual (memory) stage ``scale`` times longer;
* ``from_scratch``: one stage with memory from the first step (the paper's Fig. 11
  control: memory from scratch against warmup-then-memory at equal tokens).

Every ``eval_every`` steps a checkpoint is kept. After training, each checkpoint's bank is
built (in a scratch folder of the run, removed once evaluated) and held-out QA runs under
no memory, retrieved memory, RAG and random memory: exact match and multiple choice,
overall and per value kind (:mod:`m3jax.evaluate.kinds`). One JSON row per checkpoint goes
to ``<out>/curves.jsonl`` as it is measured, so a killed run resumes where it stopped (the
trainings resume from their checkpoints, the evaluation skips measured rows). The curves
are plotted to ``<out>/learning_curves.png`` and summarized in ``<out>/summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time

import ml_collections

CONDITIONS = ("no_memory", "memory", "rag", "random_memory")


def plan(config: ml_collections.ConfigDict, scale: float) -> dict[str, ml_collections.ConfigDict]:
  """{run name: config}: two-stage with the memory stage scaled, and memory from scratch
  for the same total number of steps (so the same tokens)."""
  from m3jax.train.stages import resize_stage

  order = list(config.train.stage_order)
  if len(order) != 2:
    raise ValueError(
      f"reproduce needs a two-stage config (warmup, continual); config.train.stage_order is {order}"
    )
  warm_name, cont_name = order
  two = ml_collections.ConfigDict(config.to_dict())
  cont = dict(two.train.stages[cont_name].to_dict())
  resize_stage(cont, max(1, round(int(cont["steps"]) * scale)))
  two.train.stages[cont_name] = cont
  warm = two.train.stages[warm_name].to_dict()
  total = int(warm["steps"]) + int(cont["steps"])
  scratch_cfg = ml_collections.ConfigDict(config.to_dict())
  scratch = dict(
    cont, init_from="", steps=total, peak_lr=warm["peak_lr"], warmup_steps=warm["warmup_steps"]
  )
  scratch_cfg.train.stages = ml_collections.ConfigDict({"scratch": scratch})
  scratch_cfg.train.stage_order = ("scratch",)
  return {"two_stage": two, "from_scratch": scratch_cfg}


def default_eval_every(runs: dict[str, ml_collections.ConfigDict], points: int = 8) -> int:
  """Steps between evaluated checkpoints: ``points`` per curve, whatever the batch and
  the scale (both runs train the same steps)."""
  return max(1, round(int(runs["from_scratch"].train.stages.scratch["steps"]) / points))


def _checkpoints(config, workdir: str) -> list[tuple[str, int, int]]:
  """(stage, step, global step) of every kept checkpoint, in training order."""
  from m3jax.run.config import build
  from m3jax.train.checkpoint import Checkpointer
  from m3jax.train.loop import stage_dir

  out, offset = [], 0
  for stage in build(config).train.stages:
    ckpt = Checkpointer(stage_dir(workdir, stage), async_save=False)
    out += [(stage.name, s, offset + s) for s in ckpt.all_steps()]
    ckpt.close()
    offset += stage.steps
  return out


def evaluate_checkpoint(
  config, workdir: str, stage: str, step: int, ev, scratch_dir: str, progress: bool = False
) -> dict:
  """QA of one checkpoint through its own freshly built bank (deleted afterwards)."""
  from m3jax.data.config import data_config_from
  from m3jax.data.prepare import DataPaths, load_vocab
  from m3jax.memory.build import build_bank, served_configs
  from m3jax.run.loading import TrainedRun, evaluate_run, kb_references
  from m3jax.train.checkpoint import restore_params

  cfg, bank_cfg = served_configs(config)
  data_cfg = data_config_from(config.data)
  paths = DataPaths(data_cfg.data_dir)
  vocab = load_vocab(data_cfg, paths)
  params, _ = restore_params(os.path.join(workdir, "checkpoints", stage, str(step)), cfg)
  refs = kb_references(paths, vocab, cfg.memory.ref_len)
  url = os.path.join(scratch_dir, f"{stage}-{step}")
  if os.path.exists(url):
    shutil.rmtree(url)  # a bank of ours that a killed run left half-built
  try:
    bank = build_bank(
      params,
      cfg,
      refs,
      url,
      bank_cfg=bank_cfg,
      checkpoint_step=step,
      tokenizer=vocab,
      progress=progress,
    )
    embedder, retriever = bank.index
    run = TrainedRun(
      cfg, paths, vocab, params, step, refs, bank, embedder, retriever, data_cfg.seq_len
    )
    res = evaluate_run(
      run,
      ev,
      plot_dir=os.path.join(scratch_dir, "plots"),
      progress=progress,
      only=("qa",),
    )
  finally:
    if os.path.exists(url):
      shutil.rmtree(url)
  return {
    k: res.get(k)
    for k in ("qa_exact_match", "qa_multiple_choice", "qa_by_kind", "num_questions", "mc_chance")
  }


def reproduce(
  config,
  workdir: str,
  out_dir: str,
  *,
  scale: float = 3.0,
  eval_every: int | None = None,
  num_questions: int = 256,
  runs: tuple[str, ...] | None = None,
  train_runs: bool = True,
  progress: bool = True,
) -> dict:
  """Trains both runs (resuming), evaluates every kept checkpoint, plots, summarizes.

  ``runs``: the names of :func:`plan` to train and evaluate now (default: both). Rows
  already in ``<out_dir>/curves.jsonl`` are kept whichever runs are named, so one arm can
  be (re)run on its own and the summary still compares both. ``train_runs=False``
  evaluates the checkpoints a run already kept (one stopped early, on a budget) without
  training further; Fig. 11 then compares the runs at the tokens both reached.
  """
  from m3jax.evaluate import plots, report
  from m3jax.run.config import from_json
  from m3jax.train.metrics import read_jsonl
  from m3jax.train.loop import train
  from m3jax.train.preempted import require_finished

  t0 = time.perf_counter()
  os.makedirs(out_dir, exist_ok=True)
  curves_path = os.path.join(out_dir, "curves.jsonl")
  done = {(r["run"], r["stage"], r["step"]) for r in read_jsonl(curves_path)}
  base_ev = report.eval_config_from(config.get("eval"))
  ev = dataclasses.replace(
    base_ev,
    num_questions=num_questions,
    conditions=tuple(c for c in CONDITIONS if c in base_ev.conditions),
  )
  planned = plan(config, scale)
  unknown = sorted(set(runs or ()) - set(planned))
  if unknown:
    raise ValueError(f"reproduce: unknown runs {unknown}; choose among {sorted(planned)}")
  eval_every = eval_every or default_eval_every(planned)
  for name, run_config in planned.items():
    if runs is not None and name not in runs:
      continue
    run_config.train.checkpoint_every = eval_every
    run_config.train.checkpoint_global = True  # both runs' points at the same tokens
    run_config.train.max_to_keep = 10_000  # every checkpoint is a point of the curve
    run_dir = os.path.join(workdir, name)
    if train_runs:
      require_finished(train(run_config, run_dir))
    elif not os.path.exists(os.path.join(run_dir, "config.json")):
      raise FileNotFoundError(
        f"reproduce: {run_dir} holds no trained run to evaluate; train it first "
        "(drop --no-train) or name the runs that exist with --runs"
      )
    # train() made data_dir content-addressed in place; the saved config says where.
    with open(os.path.join(run_dir, "config.json")) as f:
      saved = from_json(f.read())
    tokens_per_step = int(saved.train.batch_size) * int(saved.data.seq_len)
    for stage, step, global_step in _checkpoints(saved, run_dir):
      if (name, stage, step) in done:
        continue
      row = evaluate_checkpoint(
        saved, run_dir, stage, step, ev, os.path.join(run_dir, "curve-banks"), progress
      )
      row.update(
        run=name,
        stage=stage,
        step=step,
        global_step=global_step,
        tokens=global_step * tokens_per_step,
      )
      with open(curves_path, "a") as f:
        f.write(json.dumps(row) + "\n")
      if progress:
        print(
          f"[reproduce] {name} {stage}/{step}: EM {row['qa_exact_match']} "
          f"MC {row['qa_multiple_choice']}"
        )
  rows = read_jsonl(curves_path)
  png = plots.learning_curves(rows, os.path.join(out_dir, "learning_curves.png"))
  summary = summarize(rows)
  summary.update(
    plot=png,
    wall_seconds=round(time.perf_counter() - t0, 1),
    scale=scale,
    eval_every=eval_every,
    machine=report.machine(),
  )
  report.write_json(os.path.join(out_dir, "summary.json"), summary)
  return summary


MAX_TOKEN_GAP = 0.1  # Fig. 11 pairs points whose token counts differ by at most this fraction


def summarize(rows: list[dict]) -> dict:
  """The last row of each run, and Fig. 11: memory accuracy of both runs at (nearly)
  equal tokens. Each from-scratch point is paired with the two-stage point nearest in
  tokens, if within ``MAX_TOKEN_GAP`` of it (runs checkpoint on global steps,
  ``train.checkpoint_global``, so their points coincide; a two-stage run trained before
  that checkpointed per stage, its points a warmup stage's tokens off); the headline is
  the last pair, and both token counts are reported."""
  last = {}
  for r in rows:
    if r["run"] not in last or r["global_step"] > last[r["run"]]["global_step"]:
      last[r["run"]] = r
  out: dict = {
    "final": {
      run: {k: r[k] for k in ("tokens", "qa_exact_match", "qa_multiple_choice", "qa_by_kind")}
      for run, r in last.items()
    }
  }
  if not {"two_stage", "from_scratch"} <= set(last):
    return out
  runs = ("two_stage", "from_scratch")
  two = [r for r in rows if r["run"] == "two_stage"]
  pairs = []
  for b in sorted((r for r in rows if r["run"] == "from_scratch"), key=lambda r: r["tokens"]):
    a = min(two, key=lambda r: abs(r["tokens"] - b["tokens"]))
    if abs(a["tokens"] - b["tokens"]) <= MAX_TOKEN_GAP * b["tokens"]:
      pairs.append(dict(zip(runs, (a, b))))

  def point(pair):
    return {
      "tokens": {run: pair[run]["tokens"] for run in runs},
      "memory_exact_match": {run: pair[run]["qa_exact_match"]["memory"] for run in runs},
      "memory_multiple_choice": {run: pair[run]["qa_multiple_choice"]["memory"] for run in runs},
    }

  if pairs:
    out["fig11_equal_tokens"] = {
      **point(pairs[-1]),
      "max_token_gap": MAX_TOKEN_GAP,
      "curve": [point(p) for p in pairs],
    }
  return out
