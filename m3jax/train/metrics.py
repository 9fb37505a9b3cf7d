"""Run metrics: a JSONL file per run, TensorBoard summaries, a console progress bar,
and a PNG of both stages' loss curves at the end.

Device metrics are fetched in batches (every ``log_every`` steps and before every
checkpoint), so the host never blocks on each step. TensorBoard goes through
``clu.metric_writers`` (imported lazily: it pulls in TensorFlow); without it the JSONL
file is the record.
"""

from __future__ import annotations

import json
import math
import os
from typing import Iterable

import numpy as np

from m3jax.train import paths

METRICS_FILE = "metrics.jsonl"


def read_jsonl(path: str) -> list[dict]:
  """The records of a metrics file (local or gs://); a torn last line (a killed write) is
  dropped."""
  if not paths.exists(path):
    return []
  lines = [line for line in paths.read_text(path).splitlines() if line.strip()]
  records = []
  for i, line in enumerate(lines):
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      if i != len(lines) - 1:
        raise ValueError(
          f"{path}: line {i + 1} is not JSON (only a torn last line is "
          "tolerated); fix or delete the file"
        ) from None
  return records


def _json_value(x):
  x = np.asarray(x)
  if x.ndim == 0:
    v = x.item()
    return v if not isinstance(v, float) or math.isfinite(v) else str(v)
  return [_json_value(e) for e in x]


class MetricsLogger:
  """Writes per-step records ``{"stage", "step", "loss", ...}`` to ``<workdir>/metrics.jsonl``.

  ``enabled=False`` (every host but process 0 of a pod) writes nothing.
  """

  def __init__(
    self,
    workdir: str,
    *,
    tensorboard: bool = False,
    progress_bar: bool = True,
    hparams: dict | None = None,
    enabled: bool = True,
  ):
    self.workdir, self.enabled = workdir, enabled
    self.path = os.path.join(workdir, METRICS_FILE)
    if enabled and paths.exists(self.path):
      self.rewind(lambda r: True)  # drops a torn last line before appending
    self._tb = None
    if tensorboard:
      try:
        from clu import metric_writers  # lazy: TensorFlow

        self._tb = metric_writers.create_default_writer(
          os.path.join(workdir, "tensorboard"), just_logging=False, asynchronous=True
        )
      except Exception as e:  # noqa: BLE001 - TensorBoard is optional
        print(f"[m3jax.train] TensorBoard disabled ({type(e).__name__}: {e}); JSONL only")
    if self._tb is not None and hparams:
      self._tb.write_hparams(hparams)
    self._bar = None
    self._progress = progress_bar

  def rewind(self, keep) -> None:
    """Drops records ``keep(record)`` rejects (steps a resumed run will redo)."""
    if not self.enabled:
      return
    records = [r for r in read_jsonl(self.path) if keep(r)]
    paths.makedirs(self.workdir)
    paths.write_text(self.path, "".join(json.dumps(r) + "\n" for r in records))

  def start_stage(self, name: str, total: int, initial: int) -> None:
    if self._progress:
      from tqdm.auto import tqdm

      self._bar = tqdm(
        total=total, initial=initial, desc=f"train/{name}", unit="step", dynamic_ncols=True
      )

  def write(self, records: Iterable[dict]) -> None:
    records = [{k: _json_value(v) for k, v in r.items()} for r in records]
    if self.enabled:
      paths.append_text(self.path, "".join(json.dumps(r) + "\n" for r in records))
    if not records:
      return
    last = records[-1]
    if self._tb is not None:
      # One tag namespace across stages (x = global step), so curves continue.
      for r in records:
        scalars = {
          f"train/{k}": v
          for k, v in r.items()
          if isinstance(v, (int, float)) and k not in ("step", "global_step")
        }
        for i, m in enumerate(r.get("memory_mass", [])):
          scalars[f"train/memory_mass_{i}"] = m
        self._tb.write_scalars(r["global_step"], scalars)
    if self._bar is not None:
      self._bar.update(last["step"] - self._bar.n)
      self._bar.set_postfix(
        loss=f"{last['loss']:.4f}" if isinstance(last["loss"], float) else last["loss"],
        lr=f"{last['lr']:.2e}",
      )

  def write_eval(self, record: dict) -> None:
    """An evaluation-during-training record: eval_metrics.jsonl and TensorBoard ``eval/``."""
    if self.enabled:
      paths.append_text(
        os.path.join(self.workdir, "eval_metrics.jsonl"),
        json.dumps({k: _json_value(v) for k, v in record.items()}) + "\n",
      )
    if self._tb is not None:
      self._tb.write_scalars(
        record["global_step"],
        {
          f"eval/{k}": v
          for k, v in record.items()
          if isinstance(v, float) and k not in ("step", "global_step")
        },
      )
    if self._bar is not None:
      self._bar.write(
        "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items())
      )

  def end_stage(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None

  def close(self) -> None:
    self.end_stage()
    if self._tb is not None:
      self._tb.flush()
      self._tb.close()


def plot_losses(jsonl_path: str, png_path: str) -> str | None:
  """Loss vs global step, one curve per stage; returns the PNG path (None: no records)."""
  records = read_jsonl(jsonl_path)
  if not records:
    return None
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(7, 4))
  stages = list(dict.fromkeys(r["stage"] for r in records))
  for name in stages:
    rs = [r for r in records if r["stage"] == name and isinstance(r["loss"], float)]
    ax.plot([r["global_step"] for r in rs], [r["loss"] for r in rs], label=name)
  ax.set_xlabel("global step")
  ax.set_ylabel("training loss (cross-entropy, nats)")
  ax.set_title("Memory³ two-stage pretraining")
  ax.legend()
  fig.tight_layout()
  if paths.is_remote(png_path):
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    paths.write_bytes(png_path, buf.getvalue())
  else:
    fig.savefig(png_path, dpi=110)
  plt.close(fig)
  return png_path
