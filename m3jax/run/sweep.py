"""Sweeps: ``experiments/<study>.py`` declares ``get_config(arg)`` and ``get_sweep()``.

``get_sweep()`` (or ``get_sweep(arg)`` when points depend on the variant) returns a list
of override dicts (``{"model.memory.tokens_per_head": 4}``,
``{"train.stages.continual.encode_grad": False}``; stages by name); each point trains
into ``<workdir>/<point name>`` and, with ``evaluate`` (the default), is evaluated on the
held-out QA (``m3jax eval --only qa``: exact match and multiple choice per condition); the
runner writes ``summary.md``, ``summary.json`` (final losses and QA per point) and
``accuracy.png`` (each point against its multiple-choice accuracy). Points whose first stage is identical (same config
but for later stages, or a memory layout a memory-free first stage never reads) share
it: it trains once and later points start from a copy of its checkpoints. Re-running
resumes: finished points are not retrained.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import os
import re
import shutil
from typing import Any, Callable

from m3jax.run.config import apply_overrides, load_config
from m3jax.run.knowledge_fit import fit_to_knowledge_base
from m3jax.train.config import stage_dicts


def point_name(overrides: dict[str, Any]) -> str:
  """A short, filesystem-safe name for one point (or its explicit ``_name``)."""
  if "_name" in overrides:
    return str(overrides["_name"])
  parts = []
  for k, v in overrides.items():
    v = (
      "x".join(map(str, v))
      if isinstance(v, (list, tuple)) and all(isinstance(e, (int, float, str)) for e in v)
      else v
    )
    parts.append(f"{k.split('.')[-1]}={v}")
  return re.sub(r"[^A-Za-z0-9=_.,+-]", "", ",".join(parts))[:120] or "default"


def _module(path: str):
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"sweep file {path!r} not found (form: experiments/sweep_tokens_per_head.py:tiny)"
    )
  spec = importlib.util.spec_from_file_location(
    "_m3jax_sweep_" + os.path.splitext(os.path.basename(path))[0], path
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def sweep_points(spec: str, extra_overrides=()) -> list[tuple[str, Any]]:
  """[(name, config)] for every point of ``experiments/x.py:arg`` (each config built)."""
  path, _, arg = spec.partition(":")
  module = _module(path)
  for fn in ("get_config", "get_sweep"):
    if not hasattr(module, fn):
      raise ValueError(f"{spec}: a sweep file must define get_config(arg) and get_sweep()")
  takes_arg = bool(inspect.signature(module.get_sweep).parameters)
  points = []
  for overrides in module.get_sweep(arg or None) if takes_arg else module.get_sweep():
    overrides = dict(overrides)
    name = point_name(overrides)
    overrides.pop("_name", None)
    config = load_config(spec, list(extra_overrides))
    points.append((name, fit_to_knowledge_base(apply_overrides(config, overrides))))
  names = [n for n, _ in points]
  if len(set(names)) != len(names):
    raise ValueError(
      f"{spec}: sweep points must have distinct names, got {names}; "
      "add a '_name' key to each override dict"
    )
  return points


def first_stage_key(config) -> str:
  """A hash of everything the first stage's training depends on."""
  d = config.to_dict()
  first = stage_dicts(d["train"])[0]
  d["train"] = {
    k: v for k, v in d["train"].items() if k not in ("stages", "stage_order", "total_steps")
  }
  d["train"]["first_stage"] = first
  for k in ("eval", "bank", "variant"):
    d.pop(k, None)
  if not first.get("use_memory"):
    d["model"].pop("memory", None)  # a memory-free stage never reads the layout
  blob = json.dumps(d, sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _reuse_first_stage(source: str, target: str, stage: str) -> bool:
  """Copies ``source``'s finished first stage (checkpoints + metrics) into ``target``."""
  src = os.path.join(source, "checkpoints", stage)
  dst = os.path.join(target, "checkpoints", stage)
  if os.path.exists(dst) or not os.path.isdir(src):
    return False
  shutil.copytree(src, dst)
  from m3jax.train.metrics import METRICS_FILE, read_jsonl

  records = [r for r in read_jsonl(os.path.join(source, METRICS_FILE)) if r.get("stage") == stage]
  with open(os.path.join(target, METRICS_FILE), "a") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")
  return True


def evaluate_point(config, workdir: str) -> dict:
  """Held-out QA of a trained point (``eval --only qa``), saved in <point>/eval/eval.json."""
  from m3jax.evaluate import report
  from m3jax.run.loading import evaluate_run, load_trained_run

  ev = report.eval_config_from(config.get("eval"))
  t = load_trained_run(config, workdir, progress=False)
  res = evaluate_run(
    t,
    ev,
    plot_dir=os.path.join(workdir, "eval", "plots"),
    progress=False,
    only=("qa",),
  )
  report.write_json(os.path.join(workdir, "eval", "eval.json"), res)
  return {
    k: res.get(k) for k in ("qa_exact_match", "qa_multiple_choice", "num_questions", "mc_chance")
  }


def run_sweep(
  spec: str,
  workdir: str,
  *,
  extra_overrides=(),
  train_fn: Callable | None = None,
  evaluate: bool = True,
  eval_fn: Callable | None = None,
) -> dict:
  """Trains (and evaluates) every point in its own workdir; writes the summary; returns it."""
  from m3jax.run.training_eval import training_evaluators
  from m3jax.train.loop import train
  from m3jax.train.preempted import require_finished

  train_fn = train_fn or (lambda c, w: train(c, w, evaluators=training_evaluators(c)))
  os.makedirs(workdir, exist_ok=True)
  rows, trained_first = [], {}
  for name, config in sweep_points(spec, extra_overrides):
    point_dir = os.path.join(workdir, name)
    key = first_stage_key(config)
    stage = stage_dicts(config.train)[0]["name"]
    shared = None
    if key in trained_first:
      os.makedirs(point_dir, exist_ok=True)
      if _reuse_first_stage(trained_first[key], point_dir, stage):
        shared = os.path.basename(trained_first[key])
    print(f"[sweep] {name}" + (f" (stage {stage!r} reused from {shared})" if shared else ""))
    summary = require_finished(train_fn(config, point_dir))
    trained_first.setdefault(key, point_dir)
    row = {
      "point": name,
      "final_losses": summary["final_losses"],
      "workdir": summary["workdir"],
      "first_stage_from": shared,
    }
    if evaluate:
      row["qa"] = (eval_fn or evaluate_point)(config, point_dir)
    rows.append(row)
  result = {"sweep": spec, "points": rows}
  if evaluate:
    result["plot"] = plot_accuracy(rows, os.path.join(workdir, "accuracy.png"))
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(result, f, indent=2)
  with open(os.path.join(workdir, "summary.md"), "w") as f:
    f.write(summary_markdown(result))
  print(summary_markdown(result))
  return result


def summary_markdown(result: dict) -> str:
  """Final loss per stage, then exact match / multiple choice per QA condition."""
  pts = result["points"]
  stages = list(dict.fromkeys(s for r in pts for s in r["final_losses"]))
  conds = list(
    dict.fromkeys(c for r in pts for c in ((r.get("qa") or {}).get("qa_multiple_choice") or {}))
  )
  with_qa = any(r.get("qa") for r in pts)
  head = (
    [f"final loss ({s})" for s in stages]
    + [f"EM {c}" for c in conds]
    + [f"MC {c}" for c in conds]
    + (["n"] if with_qa else [])
  )
  lines = [
    f"# Sweep {result['sweep']}",
    "",
    "| point | " + " | ".join(head) + " |",
    "|---|" + "---|" * len(head),
  ]
  fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else "-"
  for r in pts:
    qa = r.get("qa") or {}
    cells = (
      [fmt(r["final_losses"].get(s)) for s in stages]
      + [fmt((qa.get("qa_exact_match") or {}).get(c)) for c in conds]
      + [fmt((qa.get("qa_multiple_choice") or {}).get(c)) for c in conds]
      + ([str(qa.get("num_questions", "-"))] if with_qa else [])
    )
    lines.append(f"| {r['point']} | " + " | ".join(cells) + " |")
  n = [(r.get("qa") or {}).get("num_questions") for r in pts if r.get("qa")]
  if n:
    lines += [
      "",
      f"QA on n = {n[0]} held-out questions per point (EM exact match, MC multiple choice).",
    ]
  return "\n".join(lines) + "\n"


def plot_accuracy(rows: list[dict], path: str) -> str | None:
  """The swept knob (one x position per point) against multiple-choice accuracy, per
  condition, with Wilson 95% intervals and the chance line."""
  rows = [r for r in rows if (r.get("qa") or {}).get("qa_multiple_choice")]
  if not rows:
    return None
  from m3jax.evaluate import plots

  plt = plots._plt()
  fig, ax = plt.subplots(figsize=(7, 3.8))
  conds = list(dict.fromkeys(c for r in rows for c in r["qa"]["qa_multiple_choice"]))
  xs = list(range(len(rows)))
  for c in conds:
    ys = [r["qa"]["qa_multiple_choice"].get(c) or 0.0 for r in rows]
    ci = [plots.wilson(y, int(r["qa"].get("num_questions") or 0)) for y, r in zip(ys, rows)]
    ax.errorbar(
      xs,
      ys,
      yerr=[[y - lo for y, (lo, _) in zip(ys, ci)], [hi - y for y, (_, hi) in zip(ys, ci)]],
      marker="o",
      capsize=3,
      label=c,
    )
  chance = rows[0]["qa"].get("mc_chance")
  if chance:
    ax.axhline(chance, color="gray", linestyle="--", linewidth=1, label="chance")
  ax.set_xticks(xs, [r["point"] for r in rows], rotation=15, fontsize=8)
  ax.set_ylim(0, 1)
  ax.set_ylabel("multiple choice (held-out)")
  ax.set_title(f"n = {rows[0]['qa'].get('num_questions')} questions per point", fontsize=9)
  ax.legend(fontsize=7)
  fig.tight_layout()
  return plots._save(fig, path, plt)
