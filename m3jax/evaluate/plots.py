"""PNG plots of a demo/eval run (matplotlib, Agg backend, nothing shown)."""

from __future__ import annotations

import json
import os
from typing import Mapping, Sequence


def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def accuracy_by_condition(results: Mapping, path: str) -> str:
  """Grouped bars: exact match and multiple choice per condition."""
  plt = _plt()
  em, mc = results.get("qa_exact_match") or {}, results.get("qa_multiple_choice") or {}
  conds = list(dict.fromkeys(list(em) + list(mc)))
  fig, ax = plt.subplots(figsize=(7, 3.8))
  w = 0.38
  xs = range(len(conds))
  ax.bar([x - w / 2 for x in xs], [em.get(c) or 0 for c in conds], w, label="exact match")
  ax.bar([x + w / 2 for x in xs], [mc.get(c) or 0 for c in conds], w, label="multiple choice")
  ax.set_xticks(list(xs), conds, rotation=15)
  ax.set_ylim(0, 1)
  ax.set_ylabel("accuracy on held-out facts")
  ax.legend()
  fig.tight_layout()
  return _save(fig, path, plt)


def accuracy_by_attribute(by_attribute: Mapping[str, Mapping[str, Mapping]], path: str
                          ) -> str | None:
  """Grouped bars: multiple choice per attribute (x) and condition (bars), counts in labels.

  ``by_attribute`` is ``qa_multiple_choice_by_attribute`` ({cond: {attr: {"accuracy",
  "count"}}}); None (no plot) when no item carried an attribute.
  """
  conds = [c for c, v in by_attribute.items() if v]
  if not conds:
    return None
  attrs = sorted({a for c in conds for a in by_attribute[c]})
  plt = _plt()
  fig, ax = plt.subplots(figsize=(max(7, 0.75 * len(attrs) + 2), 3.8))
  w = 0.8 / len(conds)
  for i, c in enumerate(conds):
    xs = [j - 0.4 + w * (i + 0.5) for j in range(len(attrs))]
    ax.bar(xs, [by_attribute[c].get(a, {}).get("accuracy", 0) for a in attrs], w, label=c)
  counts = {a: max(by_attribute[c].get(a, {}).get("count", 0) for c in conds) for a in attrs}
  ax.set_xticks(range(len(attrs)), [f"{a}\n({counts[a]})" for a in attrs], rotation=30,
                fontsize=8)
  ax.set_ylim(0, 1.2)                   # headroom for the legend above the bars
  ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
  ax.set_ylabel("multiple choice (held-out)")
  ax.legend(fontsize=7, ncol=len(conds), loc="upper center")
  fig.tight_layout()
  return _save(fig, path, plt)


def loss_curves(metrics_jsonl: str, path: str) -> str | None:
  """Training loss vs global step, one curve per stage (from the trainer's JSONL)."""
  if not os.path.exists(metrics_jsonl):
    return None
  with open(metrics_jsonl) as f:
    records = [json.loads(line) for line in f if line.strip()]
  records = [r for r in records if isinstance(r.get("loss"), (int, float))]
  if not records:
    return None
  plt = _plt()
  fig, ax = plt.subplots(figsize=(7, 3.8))
  for stage in dict.fromkeys(r["stage"] for r in records):
    rs = [r for r in records if r["stage"] == stage]
    ax.plot([r.get("global_step", r.get("step")) for r in rs], [r["loss"] for r in rs],
            label=stage)
  ax.set_xlabel("global step")
  ax.set_ylabel("training loss (nats)")
  ax.legend()
  fig.tight_layout()
  return _save(fig, path, plt)


def memory_mass_by_layer(mass_by_condition: Mapping[str, Sequence[float]], path: str) -> str:
  """Mean attention probability on memories at answer tokens, per memory layer."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6, 3.5))
  for name, masses in mass_by_condition.items():
    ax.plot(range(len(masses)), masses, marker="o", label=name)
  ax.set_xlabel("memory layer")
  ax.set_ylabel("attention mass on memories")
  ax.set_ylim(0, 1)
  ax.legend()
  fig.tight_layout()
  return _save(fig, path, plt)


def _save(fig, path: str, plt) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
