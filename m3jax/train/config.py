"""The frozen training config and the type/range checks every config section goes through.

``train_config_from(config.train)`` freezes the train section (stages addressed by name,
``total_steps`` applied); :func:`check_fields` checks a section's values against the
field types of its frozen dataclass, so ``num_layers=2.5`` or ``steps=3.0`` is a one-line
error naming the key, the value and what is allowed, before any work starts.
:func:`validate` runs every check the training loop depends on (model, data, train,
mesh) up front; ``m3jax.run.config.build`` adds the bank and eval sections.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping

from m3jax.train.stages import StageSpec, resize_stage, stages_from

DATA_SOURCES = ("pipeline", "synthetic")


class ConfigError(ValueError):
  """A config value of the wrong type or out of range (one line: key, value, allowed)."""


# ----------------------------------------------------------------------------- types
def _describe(tp) -> str:
  origin = typing.get_origin(tp)
  if origin in (typing.Union, types.UnionType):
    return " or ".join(_describe(a) for a in typing.get_args(tp))
  if origin is tuple:
    args = typing.get_args(tp)
    return f"a tuple of {_describe(args[0])}" if args else "a tuple"
  if dataclasses.is_dataclass(tp):
    return "a section"
  return {
    int: "an integer",
    float: "a number",
    bool: "true/false",
    str: "a string",
    type(None): "None",
  }.get(tp, getattr(tp, "__name__", str(tp)))


def _matches(value, tp) -> bool:
  if tp is Any:
    return True
  origin = typing.get_origin(tp)
  if origin in (typing.Union, types.UnionType):
    return any(_matches(value, a) for a in typing.get_args(tp))
  if origin is tuple:
    if not isinstance(value, (tuple, list)):
      return False
    args = typing.get_args(tp)
    return not args or all(_matches(v, args[0]) for v in value)
  if tp is type(None):
    return value is None
  if tp is bool:
    return isinstance(value, bool)
  if tp is int:
    return isinstance(value, int) and not isinstance(value, bool)
  if tp is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if isinstance(tp, type):
    return isinstance(value, tp)
  return True


def check_fields(cls, values: Mapping[str, Any], where: str) -> None:
  """Raises ConfigError unless every key of ``values`` is a field of ``cls`` of its type.

  Nested dataclass fields recurse. Missing keys are fine (the dataclass default applies).
  """
  hints = typing.get_type_hints(cls)
  names = [f.name for f in dataclasses.fields(cls)]
  for key, value in values.items():
    if key not in hints:
      raise ConfigError(f"{where}.{key}: unknown key; valid keys: {sorted(names)}")
    tp = hints[key]
    if dataclasses.is_dataclass(tp):
      if isinstance(value, tp):
        continue
      if not isinstance(value, Mapping):
        raise ConfigError(f"{where}.{key}={value!r}: expected a section")
      check_fields(tp, value, f"{where}.{key}")
    elif not _matches(value, tp):
      raise ConfigError(f"{where}.{key}={value!r}: expected {_describe(tp)}")


def field_default(f: dataclasses.Field) -> Any:
  """A dataclass field's default (its factory called), or ``dataclasses.MISSING``."""
  if f.default is not dataclasses.MISSING:
    return f.default
  if f.default_factory is not dataclasses.MISSING:
    return f.default_factory()
  return dataclasses.MISSING


def require(ok: bool, key: str, value, allowed: str) -> None:
  if not ok:
    raise ConfigError(f"{key}={value!r}: must be {allowed}")


# ----------------------------------------------------------------------------- train
# What changing a train field changes, in its metadata (read by train_keys): "step", the
# optimizer or the compiled step (the loop's step cache key); "run", what a resumed
# workdir trains (another value makes another run: m3jax.train.workdir.resume_conflicts).
STEP, RUN = "step", "run"


def _field(default, *changes: str):
  return dataclasses.field(default=default, metadata={"changes": frozenset(changes)})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Frozen ``config.train`` (configs/sections/train.py says what each field means)."""

  stages: tuple[StageSpec, ...]
  batch_size: int = _field(8, RUN)
  total_steps: int = 0  # > 0: every stage rescaled so their steps sum to this
  fallback_seq_len: int = _field(64, RUN)  # only when the config has no data section
  data_source: str = _field("pipeline", RUN)
  weight_decay: float = _field(0.1, STEP, RUN)
  b1: float = _field(0.9, STEP, RUN)
  b2: float = _field(0.95, STEP, RUN)
  eps: float = _field(1e-8, STEP, RUN)
  grad_clip: float = _field(1.0, STEP, RUN)
  # Gradient accumulation: the batch runs as this many sequential microbatches (the paper's
  # ~4M-token step does not fit a chip's HBM at once; m3jax.train.accumulate).
  microbatches: int = _field(1, STEP)  # the same gradient, another compiled step
  z_loss: float = _field(0.0, STEP, RUN)
  # > 0: in stages with memory, add this weight times the cross-entropy of the same head
  # read after the last memory layer (a training aid for the paper's first-half layout,
  # off by default; docs/design.md, "Session 19"). Inference never reads that exit.
  memory_exit_loss: float = _field(0.0, STEP, RUN)
  checkpoint_every: int = 100
  # Count checkpoint_every over the whole run (warmup + continual ...), not within each
  # stage: runs of other stage splits then keep checkpoints at the same tokens (Fig. 11).
  checkpoint_global: bool = False
  max_to_keep: int = 3
  async_checkpoint: bool = True
  log_every: int = 10
  eval_every: int = 0  # > 0: held-out loss with/without memory every N steps
  eval_batches: int = 2  # validation batches of that held-out loss
  # held-out questions for QA multiple choice at each eval_every (0: off); needs the data
  # pipeline's QA and a layer above training to run it (m3jax.run.training_eval)
  eval_qa_questions: int = 32
  nan_guard: bool = True
  tensorboard: bool = True
  plot: bool = True
  progress_bar: bool = True
  multihost: bool = False

  def __post_init__(self):
    w = "config.train"
    for name in (
      "batch_size",
      "checkpoint_every",
      "max_to_keep",
      "log_every",
      "fallback_seq_len",
      "eval_batches",
      "microbatches",
    ):
      require(
        getattr(self, name) >= 1, f"{w}.{name}", getattr(self, name), "a positive integer (>= 1)"
      )
    require(self.eval_every >= 0, f"{w}.eval_every", self.eval_every, ">= 0 (0: off)")
    require(
      self.eval_qa_questions >= 0, f"{w}.eval_qa_questions", self.eval_qa_questions, ">= 0 (0: off)"
    )
    require(
      self.total_steps >= 0,
      f"{w}.total_steps",
      self.total_steps,
      ">= 0 (0 keeps each stage's steps)",
    )
    require(
      self.data_source in DATA_SOURCES,
      f"{w}.data_source",
      self.data_source,
      f"one of {DATA_SOURCES}",
    )
    for name in ("weight_decay", "grad_clip", "eps", "z_loss", "memory_exit_loss"):
      require(getattr(self, name) >= 0, f"{w}.{name}", getattr(self, name), ">= 0")
    for name in ("b1", "b2"):
      require(0 <= getattr(self, name) < 1, f"{w}.{name}", getattr(self, name), "in [0, 1)")

  @property
  def stage_names(self) -> tuple[str, ...]:
    return tuple(s.name for s in self.stages)


def train_keys(changes: str) -> tuple[str, ...]:
  """TrainConfig fields whose value changes ``changes`` (STEP or RUN), in field order."""
  if changes not in (STEP, RUN):
    raise ValueError(f"train_keys: {changes!r} is not one of {(STEP, RUN)}")
  fields = dataclasses.fields(TrainConfig)
  return tuple(f.name for f in fields if changes in f.metadata.get("changes", ()))


_STAGE_FIELDS = {f.name for f in dataclasses.fields(StageSpec)}


def stage_dicts(section) -> list[dict]:
  """The stages of ``config.train`` as ordered dicts with their names.

  ``stages`` is a section keyed by stage name, ordered by ``stage_order`` (a list of
  dicts, the older form, is accepted too).
  """
  stages = section["stages"]
  if isinstance(stages, (list, tuple)):
    return [dict(s) for s in stages]
  order = tuple(section.get("stage_order", ()) or ())
  names = list(stages.keys())
  if sorted(order) != sorted(names):
    raise ConfigError(
      f"config.train.stage_order={order!r}: must list each stage of "
      f"config.train.stages exactly once ({sorted(names)})"
    )
  out = []
  for name in order:
    values = dict(stages[name])
    if values.get("name", name) != name:
      raise ConfigError(
        f"config.train.stages.{name}.name={values['name']!r}: must equal "
        f"its key {name!r} (or be absent)"
      )
    out.append({**values, "name": name})
  return out


def _scaled(stages: list[dict], total: int) -> list[dict]:
  """Stage lengths rescaled proportionally to sum to ``total`` (each >= 1)."""
  if total < len(stages):
    raise ConfigError(
      f"config.train.total_steps={total}: must be >= the number of stages ({len(stages)})"
    )
  old = [int(s["steps"]) for s in stages]
  new = [max(1, round(total * n / sum(old))) for n in old]
  new[-1] = max(1, total - sum(new[:-1]))
  return [resize_stage(dict(s), n) for s, n in zip(stages, new)]


def train_config_from(section, *, has_memory_layers: bool = True) -> TrainConfig:
  """``config.train`` -> TrainConfig: types checked, stages by name, total_steps applied."""
  if isinstance(section, TrainConfig):
    return section
  values = section.to_dict() if hasattr(section, "to_dict") else dict(section)
  stages = stage_dicts(values)
  for s in stages:
    check_fields(StageSpec, s, f"config.train.stages.{s.get('name', '?')}")
  values.pop("stage_order", None)
  values.pop("stages")
  if "seq_len" in values and values["seq_len"] is None:  # older configs: None = data's
    values.pop("seq_len")
  check_fields(TrainConfig, values, "config.train")
  if values.get("total_steps"):
    stages = _scaled(stages, int(values["total_steps"]))
  return TrainConfig(stages=stages_from(stages, has_memory_layers=has_memory_layers), **values)


def validate(config) -> TrainConfig:
  """Every check training depends on, before any work: model, data, train, mesh.

  Returns the frozen train config. Raises ConfigError (or the section builders'
  ValueError) naming the key, the value and what is allowed.
  """
  import jax

  from m3jax.model.config import MemoryConfig, ModelConfig, model_config_from

  model_values = config.model.to_dict() if hasattr(config.model, "to_dict") else dict(config.model)
  model_values = {k: v for k, v in model_values.items() if k not in ("dtype", "param_dtype")}
  check_fields(ModelConfig, model_values, "config.model")
  check_fields(MemoryConfig, model_values.get("memory", {}), "config.model.memory")
  try:
    cfg = model_config_from(config.model)
  except ValueError as e:
    raise ConfigError(f"config.model: {e}") from None
  tc = train_config_from(config.train, has_memory_layers=bool(cfg.memory.memory_layers))
  seq_len = tc.fallback_seq_len
  if "data" in config and tc.data_source == "pipeline":
    from m3jax.data.config import DataConfig, data_config_from

    data_values = config.data.to_dict() if hasattr(config.data, "to_dict") else dict(config.data)
    check_fields(DataConfig, data_values, "config.data")
    data_cfg = data_config_from(config.data)
    seq_len = data_cfg.seq_len
    require(
      data_cfg.vocab_size <= cfg.vocab_size,
      "config.data.vocab_size",
      data_cfg.vocab_size,
      f"<= config.model.vocab_size ({cfg.vocab_size})",
    )
  elif "data" in config:
    seq_len = int(config.data.seq_len)
  if any(s.use_memory for s in tc.stages):
    require(
      seq_len % cfg.memory.chunk_len == 0,
      "config.data.seq_len",
      seq_len,
      f"a multiple of config.model.memory.chunk_len ({cfg.memory.chunk_len}) when "
      "a stage uses memory",
    )
  shape = tuple(int(x) for x in config.sharding.mesh_shape)
  devices = jax.device_count()
  known = 1
  for x in shape:
    known *= x if x > 0 else 1
  sizes = [x if x > 0 else devices // max(known, 1) for x in shape]
  dp = sizes[0] * (sizes[1] if len(sizes) > 1 else 1)
  require(
    dp >= 1 and tc.batch_size % dp == 0,
    "config.train.batch_size",
    tc.batch_size,
    f"divisible by the data x fsdp mesh size {dp} (config.sharding.mesh_shape="
    f"{shape} on {devices} devices)",
  )
  return tc
