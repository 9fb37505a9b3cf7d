"""Sweeps: ``experiments/<study>.py`` declares ``get_config(arg)`` and ``get_sweep()``.

``get_sweep()`` (or ``get_sweep(arg)`` when points depend on the variant) returns a list
of override dicts (``{"model.memory.tokens_per_head": 4}``,
``{"train.stages.continual.encode_grad": False}``; stages by name); each point trains
into ``<workdir>/<point name>`` and the runner writes ``summary.md`` and ``summary.json``
(final loss per stage per point). Points whose first stage is identical (same config
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
from m3jax.train.config import stage_dicts


def point_name(overrides: dict[str, Any]) -> str:
  """A short, filesystem-safe name for one point (or its explicit ``_name``)."""
  if "_name" in overrides:
    return str(overrides["_name"])
  parts = []
  for k, v in overrides.items():
    v = "x".join(map(str, v)) if isinstance(v, (list, tuple)) and all(
        isinstance(e, (int, float, str)) for e in v) else v
    parts.append(f"{k.split('.')[-1]}={v}")
  return re.sub(r"[^A-Za-z0-9=_.,+-]", "", ",".join(parts))[:120] or "default"


def _module(path: str):
  if not os.path.exists(path):
    raise FileNotFoundError(f"sweep file {path!r} not found (form: "
                            "experiments/sweep_tokens_per_head.py:tiny)")
  spec = importlib.util.spec_from_file_location(
      "_m3jax_sweep_" + os.path.splitext(os.path.basename(path))[0], path)
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
  for overrides in (module.get_sweep(arg or None) if takes_arg else module.get_sweep()):
    overrides = dict(overrides)
    name = point_name(overrides)
    overrides.pop("_name", None)
    config = load_config(spec, list(extra_overrides))
    points.append((name, apply_overrides(config, overrides)))
  names = [n for n, _ in points]
  if len(set(names)) != len(names):
    raise ValueError(f"{spec}: sweep points must have distinct names, got {names}; "
                     "add a '_name' key to each override dict")
  return points


def first_stage_key(config) -> str:
  """A hash of everything the first stage's training depends on."""
  d = config.to_dict()
  first = stage_dicts(d["train"])[0]
  d["train"] = {k: v for k, v in d["train"].items()
                if k not in ("stages", "stage_order", "total_steps")}
  d["train"]["first_stage"] = first
  for k in ("eval", "bank", "variant"):
    d.pop(k, None)
  if not first.get("use_memory"):
    d["model"].pop("memory", None)   # a memory-free stage never reads the layout
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
  records = [r for r in read_jsonl(os.path.join(source, METRICS_FILE))
             if r.get("stage") == stage]
  with open(os.path.join(target, METRICS_FILE), "a") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")
  return True


def run_sweep(spec: str, workdir: str, *, extra_overrides=(),
              train_fn: Callable | None = None) -> dict:
  """Trains every point into its own workdir; writes summary.md/.json; returns the summary."""
  from m3jax.train.loop import train
  train_fn = train_fn or train
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
    summary = train_fn(config, point_dir)
    trained_first.setdefault(key, point_dir)
    rows.append({"point": name, "final_losses": summary["final_losses"],
                 "workdir": summary["workdir"], "first_stage_from": shared})
  result = {"sweep": spec, "points": rows}
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(result, f, indent=2)
  with open(os.path.join(workdir, "summary.md"), "w") as f:
    f.write(summary_markdown(result))
  print(summary_markdown(result))
  return result


def summary_markdown(result: dict) -> str:
  stages = list(dict.fromkeys(s for r in result["points"] for s in r["final_losses"]))
  lines = [f"# Sweep {result['sweep']}", "",
           "| point | " + " | ".join(f"final loss ({s})" for s in stages) + " |",
           "|---|" + "---|" * len(stages)]
  for r in result["points"]:
    cells = [f"{r['final_losses'][s]:.4f}" if isinstance(r["final_losses"].get(s), float)
             else "-" for s in stages]
    lines.append(f"| {r['point']} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"
