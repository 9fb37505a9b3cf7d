"""The frozen eval config, the results table and the results JSON.

``eval_config_from(config.eval)`` rejects unknown keys with the list of valid ones.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from typing import Any, Mapping

from m3jax.model.config import frozen_from, require_positive


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  conditions: tuple = ("no_memory", "memory", "oracle_memory", "rag", "random_memory")
  num_questions: int = 256
  qa_batch_size: int = 32
  max_new_tokens: int = 0  # exact match's generation budget; 0 = the longest answer + 1
  few_shot: int = 3
  max_prompt_tokens: int = 1024
  temperature: float = 0.0
  top_k: int = 0
  anti_copy_threshold: float = 2 / 3
  rag_header_references: str = "Reference:"
  rag_header_question: str = "Question:"
  # RAG's prompt budget in tokens: the retrieved references it reads are those that fit,
  # best first (at least one). 0: the length of the rows the model was trained on
  # (data.seq_len) less the answer's tokens, so no RAG prompt reaches positions the model
  # never saw; -1: every retrieved reference, however long the prompt.
  rag_max_tokens: int = 0
  random_memory_seed: int = 0
  perplexity_sequences: int = 32
  speed_batch: int = 16
  speed_prompt_tokens: int = 128
  speed_new_tokens: int = 128
  speed_runs: int = 3  # timed interleaved rounds, after one untimed warm-up round
  plot_dir: str = ""  # "" = <workdir>/eval/plots
  results_path: str = ""  # "" = <workdir>/eval/<command>.json
  attribution_examples: int = 4
  insertion_examples: int = 64
  # Self-retrieval (Remark 2) in the "retrievers" part: which memory layer's queries
  # search the bank's keys, and how many query tokens per head (0 = all).
  self_retrieval_layer: int = 0
  self_retrieval_tokens: int = 0

  def __post_init__(self):
    from m3jax.evaluate.qa import CONDITIONS

    object.__setattr__(self, "conditions", tuple(self.conditions))
    bad = [c for c in self.conditions if c not in CONDITIONS]
    if bad:
      raise ValueError(f"invalid config field 'eval.conditions': {bad} not in {CONDITIONS}")
    lengths = ("max_prompt_tokens", "speed_prompt_tokens", "speed_new_tokens")
    require_positive(self, ("qa_batch_size", "speed_batch", "speed_runs", *lengths), "eval.")
    if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0:
      raise ValueError(
        f"invalid config field 'eval.max_new_tokens': {self.max_new_tokens!r}; a number of "
        "tokens >= 1, or 0 to size it to the longest answer"
      )
    if not isinstance(self.few_shot, int) or self.few_shot < 0:
      raise ValueError(
        f"invalid config field 'eval.few_shot': {self.few_shot!r}; a number of demonstrations >= 0"
      )
    if not isinstance(self.rag_max_tokens, int) or self.rag_max_tokens < -1:
      raise ValueError(
        f"invalid config field 'eval.rag_max_tokens': {self.rag_max_tokens!r}; a number of "
        "tokens >= 1, 0 for the trained row length, or -1 for no budget"
      )
    if not 0 < self.anti_copy_threshold <= 1:
      raise ValueError("invalid config field 'eval.anti_copy_threshold': must be in (0, 1]")


def eval_config_from(section: Mapping[str, Any] | None) -> EvalConfig:
  if isinstance(section, EvalConfig):
    return section
  values = (
    {} if section is None else (section.to_dict() if hasattr(section, "to_dict") else dict(section))
  )
  return frozen_from(EvalConfig, values, "eval.")


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo), else what ``platform`` knows. Times on a CPU
  depend on it: the demo's steps took twice as long on an AVX2-only EPYC as on an
  AVX-512 Xeon."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def machine() -> dict:
  """A short description of where the numbers came from."""
  import jax

  dev = jax.devices()[0]
  return {
    "platform": platform.platform(),
    "processor": platform.processor(),
    "cpu": cpu_model(),
    "cpu_count": os.cpu_count(),
    "python": platform.python_version(),
    "jax": jax.__version__,
    "backend": jax.default_backend(),
    "device": getattr(dev, "device_kind", str(dev)),
    "num_devices": jax.device_count(),
  }


def _fmt(x) -> str:
  if x is None:
    return "-"
  if isinstance(x, float):
    return f"{x:.3f}" if abs(x) < 1000 else f"{x:.0f}"
  return str(x)


def table(results: Mapping[str, Any]) -> str:
  """Condition rows x metric columns, plain text; then retrieval, insertion, skipped parts."""
  metrics = [
    ("qa_exact_match", "exact match"),
    ("qa_multiple_choice", "multiple choice"),
    ("perplexity", "perplexity"),
    ("decode_tokens_per_s", "tokens/s"),
    ("time_to_first_token_s", "TTFT s"),
  ]
  conds = []
  for key, _ in metrics:
    for c in results.get(key) or {}:
      if c not in conds:
        conds.append(c)
  cols = [(k, t) for k, t in metrics if results.get(k)]
  lines = [f"{'condition':<15}" + "".join(f"{t:>17}" for _, t in cols)]
  for c in conds:
    lines.append(
      f"{c:<15}" + "".join(f"{_fmt((results.get(k) or {}).get(c)):>17}" for k, _ in cols)
    )
  by_kind = results.get("qa_by_kind") or {}
  kinds = sorted({k for per in by_kind.values() for k in per})
  if kinds:
    counts = {k: max(per.get(k, {}).get("count", 0) for per in by_kind.values()) for k in kinds}
    lines.append("exact match / multiple choice by value kind:")
    lines.append(f"{'condition':<15}" + "".join(f"{f'{k} (n={counts[k]})':>24}" for k in kinds))
    for c, per in by_kind.items():
      cells = [
        f"{_fmt(per.get(k, {}).get('exact_match'))} / {_fmt(per.get(k, {}).get('multiple_choice'))}"
        for k in kinds
      ]
      lines.append(f"{c:<15}" + "".join(f"{cell:>24}" for cell in cells))
  notes = []
  if "memory_warm" in (results.get("decode_tokens_per_s") or {}):
    notes.append(
      "tokens/s: memory = cold (row cache off, unique ids: the paper's worst "
      "case), memory_warm = row cache on"
    )
  ratios = (results.get("speed") or {}).get("ratios") or {}
  if ratios:
    notes.append(
      "tokens/s are medians of interleaved rounds; paired per-round ratios, median "
      "(quartiles): "
      + ", ".join(
        f"{k.replace('_vs_', ' / ')} {r['median']:.3f} ({r['q25']:.3f}-{r['q75']:.3f}, n={r['n']})"
        for k, r in ratios.items()
      )
    )
  if "oracle_memory" in (results.get("perplexity") or {}):
    notes.append(
      "perplexity: memory = causal (chunk c reads chunk c-1's retrieval), "
      "oracle_memory = retrieved with the scored chunk's own text"
    )
  if results.get("rag_refs_read") is not None:
    budget = results.get("rag_prompt_budget")
    notes.append(
      f"rag: {_fmt(results['rag_refs_read'])} retrieved references read per question, "
      + (f"those that fit a {budget}-token prompt" if budget else "every one (no budget)")
      + " (eval.rag_max_tokens)"
    )
  if results.get("qa_answers_over_budget"):
    notes.append(
      f"exact match: {results['qa_answers_over_budget']} answers need more than "
      f"eval.max_new_tokens={results.get('qa_max_new_tokens')} tokens and are cut off "
      "(0 sizes it to the answers)"
    )
  ret = results.get("retrieval") or {}
  if ret:
    lines.append("retrieval: " + ", ".join(f"{k} {_fmt(v)}" for k, v in ret.items()))
  by_ret = results.get("retrieval_by_retriever") or {}
  if by_ret:
    lines.append(
      "gold reference by retriever (unfiltered): "
      + "; ".join(
        f"{name} " + " ".join(f"{m} {_fmt(x)}" for m, x in v.items()) for name, v in by_ret.items()
      )
    )
  ins = results.get("knowledge_insertion") or {}
  if ins:
    states = {k: v for k, v in ins.items() if isinstance(v, Mapping)}
    cells = [
      f"{k}: " + " ".join(f"{m} {_fmt(x)}" for m, x in v.items() if isinstance(x, (int, float)))
      for k, v in states.items()
    ]
    lines.append(f"knowledge insertion (n={ins.get('num_items', '?')}): " + "; ".join(cells))
  for part, why in (results.get("skipped") or {}).items():
    lines.append(f"skipped {part}: {why}")
  return "\n".join(lines + notes)


def write_json(path: str, results: Mapping[str, Any]) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(results, f, indent=1, default=_default)
  os.replace(tmp, path)
  return path


def write_html(path: str, results: Mapping[str, Any], title: str = "m3jax run") -> str:
  """One self-contained page: the results table and every plot (inlined as PNG data)."""
  import base64
  import html

  parts = [
    f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
    "<style>body{font-family:sans-serif;max-width:900px;margin:auto}"
    "img{max-width:100%}pre{background:#f6f6f6;padding:8px}</style>",
    f"<h1>{html.escape(title)}</h1>",
    f"<pre>{html.escape(table(results))}</pre>",
  ]
  meta = {
    k: results.get(k)
    for k in ("checkpoint_step", "num_questions", "mc_chance", "wall_seconds")
    if results.get(k) is not None
  }
  if meta:
    parts.append(f"<pre>{html.escape(json.dumps(meta, default=_default))}</pre>")
  for name, png in (results.get("plots") or {}).items():
    if png and os.path.exists(png):
      with open(png, "rb") as f:
        data = base64.b64encode(f.read()).decode()
      parts.append(f"<h2>{html.escape(name)}</h2><img src='data:image/png;base64,{data}'>")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    f.write("\n".join(parts))
  return path


def _default(x):
  import numpy as np

  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  return str(x)
