"""One config system: ``ml_collections.config_flags`` files, locked, frozen by one builder.

  config = load_config("configs/memory3.py:small", ["--config.model.num_layers=8"])
  run = build(config)     # RunConfig: every section frozen into its dataclass, validated

The file (``path.py[:arg]``, ``get_config(arg)``) is loaded and overridden by
``ml_collections.config_flags`` and locked, so a typo or a wrong type (``num_layers=2.5``)
is an error, never a silently ignored key. Training stages are addressed by name
(``--config.train.stages.continual.steps=100``; ``stages.1`` still means the second stage).
Defaults live in the frozen dataclasses only: config sections are built from them by
:func:`section_of`, and set only what a variant changes.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Any, Iterable, Mapping

import ml_collections

from m3jax.train.config import ConfigError, TrainConfig, check_fields, field_default, validate
from m3jax.train.workdir import config_from_json as from_json  # one reader of config.json

_PREFIX = "--config."


# ----------------------------------------------------------------------------- sections
def _plain(value):
  """A config-file value: tuples for sequences, dtype names for dtypes."""
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
  if isinstance(value, (list, tuple)):
    return tuple(_plain(v) for v in value)
  if isinstance(value, type) or type(value).__module__.startswith(("numpy", "jax", "ml_dtypes")):
    import numpy as np

    return np.dtype(value).name
  return value


def section_of(cls, values: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
  """A config section with every field of the frozen dataclass ``cls``.

  Fields take ``values`` where given, else the dataclass default (the one place defaults
  live); nested dataclass fields become nested sections. Unknown keys are an error.
  """
  values = dict(values or {})
  names = [f.name for f in dataclasses.fields(cls)]
  unknown = sorted(set(values) - set(names))
  if unknown:
    raise ConfigError(f"{cls.__name__}: unknown keys {unknown}; valid keys: {names}")
  out = ml_collections.ConfigDict()
  for f in dataclasses.fields(cls):
    value = values[f.name] if f.name in values else field_default(f)
    if value is dataclasses.MISSING:
      raise ConfigError(f"{cls.__name__}.{f.name} has no default; the config must set it")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
      out[f.name] = section_of(type(value), _plain(value))
    elif isinstance(value, Mapping) and not isinstance(value, ml_collections.ConfigDict):
      nested = f.default if dataclasses.is_dataclass(f.default) else None
      out[f.name] = (
        section_of(type(nested), value)
        if nested is not None
        else ml_collections.ConfigDict(dict(value))
      )
    else:
      out[f.name] = _plain(value)
  return out


# ----------------------------------------------------------------------------- loading
def _flag_values(spec, argv: list[str]):
  """absl flags holding ``--config``: a file spec, or a ConfigDict (a saved run's)."""
  from absl import flags
  from ml_collections import config_flags

  fv = flags.FlagValues()
  if isinstance(spec, str):
    full = ["m3jax", f"--config={spec}"] + argv
    config_flags.DEFINE_config_file("config", spec, flag_values=fv, lock_config=True, sys_argv=full)
  else:
    full = ["m3jax"] + argv
    config_flags.DEFINE_config_dict("config", spec, flag_values=fv, lock_config=True, sys_argv=full)
  return fv, full


def _node_keys(node) -> list[str]:
  return list(node.keys()) if hasattr(node, "keys") else []


def _resolve_key(config, key: str) -> str:
  """``key`` with integer stage indices replaced by stage names; unknown keys raise."""
  parts = key.split(".")
  if parts[:2] == ["train", "stages"] and len(parts) > 2 and parts[2].isdigit():
    order = list(config.train.get("stage_order", ()))
    i = int(parts[2])
    if i >= len(order):
      raise ConfigError(f"--config.{key}: there are {len(order)} stages {order}")
    parts[2] = order[i]
  node = config
  for i, part in enumerate(parts):
    keys = _node_keys(node)
    if part not in keys:
      close = difflib.get_close_matches(part, keys, n=3, cutoff=0.5)
      hint = f"; did you mean {close}?" if close else ""
      raise ConfigError(
        f"--config.{'.'.join(parts[: i + 1])}: unknown config key{hint} "
        f"(valid here: {sorted(keys)})"
      )
    node = node[part]
  return ".".join(parts)


def _split(text: str) -> tuple[str, str | None]:
  body = text[len(_PREFIX) :] if text.startswith(_PREFIX) else text
  key, sep, raw = body.partition("=")
  return key, (raw if sep else None)


def _load_module_config(spec: str):
  fv, full = _flag_values(spec, [])
  fv(full)
  return fv.config


def load_config(
  spec, overrides: Iterable[str] | Mapping[str, Any] = ()
) -> ml_collections.ConfigDict:
  """``get_config(arg)`` of ``path.py:arg`` (or a ConfigDict), overridden, locked.

  ``overrides``: CLI strings (``--config.a.b=v``; a value may also follow as the next
  string) parsed by ``config_flags``, or a mapping ``{"a.b": value}`` (sweeps).
  """
  if not isinstance(spec, str):
    spec = from_json(to_json(spec))  # a private, locked copy
  if isinstance(overrides, Mapping):
    base = _load_module_config(spec) if isinstance(spec, str) else spec
    return apply_overrides(base, overrides)
  args = list(overrides)
  try:
    base = _load_module_config(spec) if isinstance(spec, str) else spec
  except OSError as e:
    raise ConfigError(
      f"--config {spec}: cannot load it ({e}); the form is configs/memory3.py:small"
    ) from None
  if not args:
    return base
  argv, i = [], 0
  while i < len(args):
    key, raw = _split(args[i])
    if raw is None:
      if i + 1 >= len(args):
        raise ConfigError(f"{args[i]}: give a value (--config.{key}=VALUE)")
      raw, i = args[i + 1], i + 1
    key = _resolve_key(base, key)
    argv.append(f"--config.{key}={raw}")
    i += 1
  fv, full = _flag_values(spec, argv)
  try:
    fv(full)
    return fv.config
  except Exception as e:  # absl wraps parse errors: one line naming key, value, type
    msg = str(e).splitlines()[0]
    m = re.match(r"flag --config\.([\w.]+)=(.*?): (.*)", msg)
    if m:
      key, raw = m.group(1), m.group(2)
      old = _get(base, key)
      raise ConfigError(f"--config.{key}={raw}: expected {_kind(old)}") from None
    raise ConfigError(f"--config overrides {argv}: {msg}") from None


def _get(config, key: str):
  node = config
  for part in key.split("."):
    node = node[part]
  return node


def _kind(value) -> str:
  if isinstance(value, bool):
    return "true or false"
  if isinstance(value, int):
    return "an integer (e.g. 3, not 3.0 or 3e0)"
  if isinstance(value, float):
    return "a number"
  if isinstance(value, tuple):
    return "a tuple, e.g. (0,1)"
  return f"a {type(value).__name__}"


def apply_overrides(config, overrides: Iterable[str] | Mapping[str, Any]):
  """Sets ``{"a.b": value}`` (or CLI strings parsed as Python literals) on ``config``.

  Keys must exist (stages by name or index); values must keep the field's type, except
  that an int may set a float field and a list a tuple field. A whole section
  (``train.stages``) may be replaced by a mapping.
  """
  import ast

  items = []
  if isinstance(overrides, Mapping):
    items = list(overrides.items())
  else:
    for text in overrides:
      key, raw = _split(text)
      if raw is None:
        raise ConfigError(f"{text}: use --config.{key}=VALUE")
      try:
        value = ast.literal_eval(raw)
      except (ValueError, SyntaxError):
        value = {"true": True, "false": False}.get(raw.lower(), raw)
      items.append((key, value))
  for key, value in items:
    key = _resolve_key(config, key)
    *parents, last = key.split(".")
    node = _get(config, ".".join(parents)) if parents else config
    old = node[last]
    if isinstance(value, list) and isinstance(old, tuple):
      value = tuple(value)
    if isinstance(old, ml_collections.ConfigDict) and isinstance(value, Mapping):
      value = ml_collections.ConfigDict(dict(value))
      with node.ignore_type():
        node[last] = value
      continue
    if (
      isinstance(old, bool) != isinstance(value, bool)
      or (isinstance(old, int) and not isinstance(old, bool) and not isinstance(value, int))
      or (isinstance(old, float) and not isinstance(value, (int, float)))
      or (isinstance(old, str) and not isinstance(value, str))
    ):
      raise ConfigError(f"--config.{key}={value!r}: expected {_kind(old)}")
    node[last] = float(value) if isinstance(old, float) else value
  return config


def to_json(config) -> str:
  return config.to_json(indent=1, sort_keys=False)


def with_serving_defaults(config) -> ml_collections.ConfigDict:
  """A locked copy of a saved run's config with every ``bank`` and ``eval`` field.

  A workdir's config.json lists the fields of the release that trained it; those two
  sections only say how the trained model is served and measured, so a field added
  since reads at its default and can be overridden
  (``eval --workdir W --config.bank.tokens_per_head=24``). The model, data and training
  sections are left as saved: there a new field is checked against the run
  (``m3jax.train.workdir.resume_conflicts``), except ``data.user_qa_train``, which reads
  "off" (what the run was prepared with) when absent.
  """
  from m3jax.evaluate.report import EvalConfig
  from m3jax.memory.build import BankConfig

  values = config.to_dict()
  for name, cls in (("bank", BankConfig), ("eval", EvalConfig)):
    values[name] = section_of(cls, values.get(name) or {}).to_dict()
  if isinstance(values.get("data"), dict) and "user_qa_train" not in values["data"]:
    # Trained before the QA split (m3jax.data.qa_split): its data, vocabulary included,
    # was prepared with the whole QA file evaluated.
    values["data"]["user_qa_train"] = "off"
  return from_json(ml_collections.ConfigDict(values).to_json())


# ----------------------------------------------------------------------------- build
@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Every section of a run config, frozen and validated."""

  model: Any
  data: Any
  bank: Any
  train: TrainConfig
  eval: Any
  seed: int
  variant: str


def build(config) -> RunConfig:
  """Freezes and validates every section, before any work starts.

  Raises ConfigError (a ValueError) naming the key, the value and what is allowed.
  """
  from m3jax.data.config import data_config_from
  from m3jax.evaluate.report import EvalConfig, eval_config_from
  from m3jax.memory.build import BankConfig, bank_config_from
  from m3jax.model.config import model_config_from

  tc = validate(config)
  sections = {}
  for name, cls, fn in (
    ("bank", BankConfig, bank_config_from),
    ("eval", EvalConfig, eval_config_from),
  ):
    values = config.get(name)
    values = (
      {} if values is None else (values.to_dict() if hasattr(values, "to_dict") else dict(values))
    )
    check_fields(cls, values, f"config.{name}")
    try:
      sections[name] = fn(values)
    except ValueError as e:
      raise ConfigError(str(e).splitlines()[0]) from None
  data = data_config_from(config.data) if "data" in config else None
  return RunConfig(
    model=model_config_from(config.model),
    data=data,
    bank=sections["bank"],
    train=tc,
    eval=sections["eval"],
    seed=int(config.get("seed", 0)),
    variant=str(config.get("variant", "")),
  )
