"""Training stages as data (STYLE practice 9): one loop runs a list of StageSpecs.

The paper's recipe (SPEC §4.5-4.6) is two stages: a warmup without memory, then
continual training with live-encoded memories from the warmup's last checkpoint, with a
fresh optimizer and a smaller peak LR. Ablations (memory from scratch, encode_grad off,
strictly causal references) are different StageSpec values, never code forks.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

SCHEDULES = ("wsd", "cosine", "constant")
# Which references a chunk reads in training (m3jax.train.memory_batch): "chunks", the
# paper's (its own and the previous R-1 chunks'), or "similar" (its own and the R-1
# batch references most like it; not in the paper).
MEMORY_WINDOWS = ("chunks", "similar")


def resize_stage(stage: dict, steps: int) -> dict:
  """Sets a stage dict's length in place; its warmup is capped at a fifth (at least 1)."""
  stage["steps"] = steps
  stage["warmup_steps"] = min(int(stage["warmup_steps"]), max(1, steps // 5))
  return stage


@dataclasses.dataclass(frozen=True)
class StageSpec:
  """One training stage.

  init_from: "" (fresh init from the seed), "previous" (params of the previous stage's
    last checkpoint), or a checkpoint directory (params of its latest step).
  reset_optimizer: a fresh optimizer state (and step 0 of this stage's schedule); with
    False and init_from="previous" the previous optimizer state is carried over.
  use_memory: encode the batch's references live and attend to them.
  encode_grad: gradients flow into the reference encoding through the selected K/V.
  memory_window: "chunks" (the paper's: chunk c reads the references of chunks
    c-R+1..c) or "similar" (not in the paper: its own reference and the R-1 distinct
    references of the batch most like it, the shape of a retrieved top-R;
    m3jax.train.memory_batch.similar_windows). Which text retrieved each chunk's own
    reference (its own or, strictly causal, the previous one) is the data's
    ``config.data.train_query``.
  """

  name: str
  steps: int
  peak_lr: float
  schedule: str = "wsd"
  warmup_steps: int = 0
  decay_fraction: float = 0.1  # WSD: decay over the last 10% of steps
  final_lr_fraction: float = 0.01  # ... to 1% of the peak ("near zero")
  init_from: str = ""
  reset_optimizer: bool = True
  use_memory: bool = False
  encode_grad: bool = True
  memory_window: str = "chunks"

  def __post_init__(self):
    where = f"config.train.stages[{self.name!r}]"
    if self.memory_window not in MEMORY_WINDOWS:
      raise ValueError(f"{where}.memory_window={self.memory_window!r}: use one of {MEMORY_WINDOWS}")
    if not self.name or "/" in self.name:
      raise ValueError(f"{where}: name must be a non-empty string without '/'")
    if self.steps <= 0:
      raise ValueError(f"{where}.steps must be positive, got {self.steps}")
    if self.peak_lr < 0:
      raise ValueError(f"{where}.peak_lr must be >= 0, got {self.peak_lr}")
    if self.schedule not in SCHEDULES:
      raise ValueError(f"{where}.schedule={self.schedule!r} is not one of {SCHEDULES}")
    if not 0 <= self.warmup_steps <= self.steps:
      raise ValueError(f"{where}.warmup_steps={self.warmup_steps} must be in 0..steps")
    if not 0 <= self.decay_fraction <= 1:
      raise ValueError(f"{where}.decay_fraction must be in [0, 1]")
    if not 0 <= self.final_lr_fraction <= 1:
      raise ValueError(f"{where}.final_lr_fraction must be in [0, 1]")


def stage_from(values: Mapping[str, Any]) -> StageSpec:
  values = dict(values)
  names = [f.name for f in dataclasses.fields(StageSpec)]
  unknown = sorted(set(values) - set(names))
  if unknown:
    raise ValueError(
      f"config.train.stages[{values.get('name', '?')!r}]: unknown keys "
      f"{unknown}; valid keys: {names}"
    )
  missing = [n for n in ("name", "steps", "peak_lr") if n not in values]
  if missing:
    raise ValueError(f"config.train.stages: a stage is missing {missing}")
  return StageSpec(**values)


def stages_from(
  values: Iterable[Mapping[str, Any]], *, has_memory_layers: bool = True
) -> tuple[StageSpec, ...]:
  """Validated stages from ``config.train.stages`` (a list of dicts)."""
  stages = tuple(stage_from(v) for v in values)
  if not stages:
    raise ValueError("config.train.stages is empty")
  names = [s.name for s in stages]
  if len(set(names)) != len(names):
    raise ValueError(f"config.train.stages: stage names must be unique, got {names}")
  if stages[0].init_from == "previous":
    raise ValueError(
      f"config.train.stages[{names[0]!r}]: the first stage cannot init_from='previous'"
    )
  for s in stages:
    if s.use_memory and not has_memory_layers:
      raise ValueError(
        f"config.train.stages[{s.name!r}] uses memory but "
        "config.model.memory.memory_layers is empty; set use_memory=False"
      )
  return stages
