"""PNG plots of a demo/eval run (matplotlib, Agg backend, nothing shown).

Accuracy plots carry the number of questions, a chance line and Wilson 95% intervals;
layer axes are integers.
"""

from __future__ import annotations

import math
import os
from typing import Mapping, Sequence


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
  """Wilson score interval of a proportion ``p`` observed on ``n`` trials (95% default)."""
  if n <= 0:
    return 0.0, 1.0
  denom = 1 + z * z / n
  center = (p + z * z / (2 * n)) / denom
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
  # The interval always holds p; clamping keeps it so under rounding (at p = 1, center +
  # half can come out as 0.999…, and matplotlib refuses the negative error bar).
  return max(0.0, min(p, center - half)), min(1.0, max(p, center + half))


def _bars_with_ci(ax, xs, values, n, width, label):
  lo_hi = [wilson(v, n) for v in values]
  err = [
    [v - lo for v, (lo, _) in zip(values, lo_hi)],
    [hi - v for v, (_, hi) in zip(values, lo_hi)],
  ]
  ax.bar(xs, values, width, label=label, yerr=err, capsize=3, error_kw={"elinewidth": 0.8})


def _plt():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def accuracy_by_condition(results: Mapping, path: str) -> str:
  """Grouped bars: exact match and multiple choice per condition, Wilson 95% intervals,
  the multiple-choice chance line (``results["mc_chance"]``) and n in the title."""
  plt = _plt()
  em, mc = results.get("qa_exact_match") or {}, results.get("qa_multiple_choice") or {}
  conds = list(dict.fromkeys(list(em) + list(mc)))
  n = int(results.get("num_questions") or 0)
  fig, ax = plt.subplots(figsize=(7, 3.8))
  w = 0.38
  xs = range(len(conds))
  _bars_with_ci(ax, [x - w / 2 for x in xs], [em.get(c) or 0 for c in conds], n, w, "exact match")
  _bars_with_ci(
    ax, [x + w / 2 for x in xs], [mc.get(c) or 0 for c in conds], n, w, "multiple choice"
  )
  chance = results.get("mc_chance")
  if chance:
    ax.axhline(
      chance,
      color="gray",
      linestyle="--",
      linewidth=1,
      label=f"chance (multiple choice) {chance:.2f}",
    )
  ax.set_xticks(list(xs), conds, rotation=15)
  ax.set_ylim(0, 1.15)
  ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
  ax.set_ylabel("accuracy on held-out facts")
  ax.set_title(f"n = {n} questions; bars: Wilson 95% intervals", fontsize=9)
  ax.legend(fontsize=7, ncol=3, loc="upper center")
  fig.tight_layout()
  return _save(fig, path, plt)


def accuracy_by_attribute(
  by_attribute: Mapping[str, Mapping[str, Mapping]], path: str, chance: float | None = None
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
  counts = {a: max(by_attribute[c].get(a, {}).get("count", 0) for c in conds) for a in attrs}
  for i, c in enumerate(conds):
    for j, a in enumerate(attrs):
      acc = by_attribute[c].get(a, {}).get("accuracy", 0)
      lo, hi = wilson(acc, counts[a])
      ax.bar(
        j - 0.4 + w * (i + 0.5),
        acc,
        w,
        color=f"C{i}",
        label=c if j == 0 else None,
        yerr=[[acc - lo], [hi - acc]],
        capsize=2,
        error_kw={"elinewidth": 0.6},
      )
  if chance:
    ax.axhline(chance, color="gray", linestyle="--", linewidth=1, label="chance")
  ax.set_xticks(range(len(attrs)), [f"{a}\n({counts[a]})" for a in attrs], rotation=30, fontsize=8)
  ax.set_ylim(0, 1.2)  # headroom for the legend above the bars
  ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
  ax.set_ylabel("multiple choice (held-out)")
  ax.set_title("(n per attribute); bars: Wilson 95% intervals", fontsize=9)
  ax.legend(fontsize=7, ncol=len(conds), loc="upper center")
  fig.tight_layout()
  return _save(fig, path, plt)


def loss_curves(metrics_jsonl: str, path: str) -> str | None:
  """Training loss vs global step, one curve per stage (the trainer's own plot)."""
  from m3jax.train.metrics import plot_losses

  return plot_losses(metrics_jsonl, path)


def memory_mass_by_layer(mass_by_condition: Mapping[str, Sequence[float]], path: str) -> str:
  """Mean attention probability on memories at answer tokens, per memory layer."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6, 3.5))
  width = 0
  for name, masses in mass_by_condition.items():
    ax.plot(range(len(masses)), masses, marker="o", label=name)
    width = max(width, len(masses))
  ax.set_xticks(range(width))  # layers are integers
  ax.set_xlabel("memory layer (index among the memory layers)")
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


def learning_curves(rows: Sequence[Mapping], path: str) -> str | None:
  """Accuracy against training tokens (``m3jax reproduce``): one column per value kind
  (plus "all"), exact match on top and multiple choice below; a line per condition,
  solid for the two-stage run and dashed for memory from scratch; Wilson 95% bands on the
  memory condition, chance on multiple choice."""
  if not rows:
    return None
  plt = _plt()
  kinds = sorted({k for r in rows for per in (r.get("qa_by_kind") or {}).values() for k in per})
  cols = ["all"] + kinds
  fig, axes = plt.subplots(
    2, len(cols), figsize=(3.4 * len(cols), 6), squeeze=False, sharex=True, sharey=True
  )
  styles = {"two_stage": "-", "from_scratch": "--"}
  colors = {
    "no_memory": "tab:gray",
    "memory": "tab:blue",
    "rag": "tab:orange",
    "random_memory": "tab:red",
  }

  def value(r, metric, cond, kind):
    if kind == "all":
      key = "qa_exact_match" if metric == "exact_match" else "qa_multiple_choice"
      return (r.get(key) or {}).get(cond), int(r.get("num_questions") or 0)
    cell = ((r.get("qa_by_kind") or {}).get(cond) or {}).get(kind) or {}
    return cell.get(metric), int(cell.get("count") or 0)

  for run in sorted({r["run"] for r in rows}):
    rs = sorted((r for r in rows if r["run"] == run), key=lambda r: r["tokens"])
    for i, metric in enumerate(("exact_match", "multiple_choice")):
      for j, kind in enumerate(cols):
        ax = axes[i][j]
        for cond, color in colors.items():
          pts = [(r["tokens"], *value(r, metric, cond, kind)) for r in rs]
          pts = [(t, v, n) for t, v, n in pts if v is not None]
          if not pts or (run == "from_scratch" and cond != "memory"):
            continue
          ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            styles.get(run, "-"),
            color=color,
            marker=".",
            label=f"{cond} ({run})",
          )
          if cond == "memory":
            band = [wilson(v, n) for _, v, n in pts]
            ax.fill_between(
              [p[0] for p in pts],
              [b[0] for b in band],
              [b[1] for b in band],
              color=color,
              alpha=0.12,
            )
  chance = next((r.get("mc_chance") for r in rows if r.get("mc_chance")), None)
  n = max(int(r.get("num_questions") or 0) for r in rows)
  for j, kind in enumerate(cols):
    axes[0][j].set_title(f"{kind}", fontsize=10)
    if chance:
      axes[1][j].axhline(chance, color="gray", linestyle=":", linewidth=1)
    axes[1][j].set_xlabel("training tokens")
  axes[0][0].set_ylabel("exact match")
  axes[1][0].set_ylabel("multiple choice")
  axes[0][0].set_ylim(0, 1.02)
  handles, labels = axes[0][0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
  fig.suptitle(
    f"held-out QA vs training tokens (n = {n} questions; band: Wilson 95%, memory)", fontsize=10
  )
  fig.tight_layout(rect=(0, 0.08, 1, 0.95))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
