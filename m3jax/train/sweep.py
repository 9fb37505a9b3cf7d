"""Sweeps: ``experiments/<study>.py`` declares ``get_config(arg)`` and ``get_sweep()``.

``get_sweep()`` (or ``get_sweep(arg)`` when points depend on the variant) returns a list of override dicts (``{"model.memory.tokens_per_head": 4}``,
``{"train.stages": [...]}``); each point trains into ``<workdir>/<point name>`` and the
runner writes ``summary.md`` and ``summary.json`` (final loss per stage per point).
Re-running resumes: finished points are loaded from their workdirs, not retrained.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Callable

from m3jax.config_loading import apply_overrides, load_module


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


def sweep_points(spec: str) -> list[tuple[str, Any]]:
  """[(name, config)] for every point of ``experiments/x.py:arg`` (each config built)."""
  module, arg = load_module(spec)
  for fn in ("get_config", "get_sweep"):
    if not hasattr(module, fn):
      raise ValueError(f"{spec}: a sweep file must define get_config(arg) and get_sweep()")
  import inspect
  takes_arg = bool(inspect.signature(module.get_sweep).parameters)
  points = []
  for overrides in (module.get_sweep(arg) if takes_arg else module.get_sweep()):
    overrides = dict(overrides)
    name = point_name(overrides)
    overrides.pop("_name", None)
    config = module.get_config(arg) if arg is not None else module.get_config()
    points.append((name, apply_overrides(config, overrides)))
  names = [n for n, _ in points]
  if len(set(names)) != len(names):
    raise ValueError(f"{spec}: sweep points must have distinct names, got {names}; "
                     "add a '_name' key to each override dict")
  return points


def run_sweep(spec: str, workdir: str, *, extra_overrides=(),
              train_fn: Callable | None = None) -> dict:
  """Trains every point into its own workdir; writes summary.md/.json; returns the summary."""
  from m3jax.train.loop import train
  train_fn = train_fn or train
  os.makedirs(workdir, exist_ok=True)
  rows = []
  for name, config in sweep_points(spec):
    apply_overrides(config, list(extra_overrides))
    print(f"[sweep] {name}")
    summary = train_fn(config, os.path.join(workdir, name))
    rows.append({"point": name, "final_losses": summary["final_losses"],
                 "workdir": summary["workdir"]})
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
