"""A workdir is one run: ``train`` records what it was, and refuses to become another.

``<workdir>/config.json``  the resolved config (every later command reads it)
``<workdir>/run.json``     package version, data hash (``sources_key``), vocabulary hash

Resuming with a config that changes the model, the data, the training hyperparameters
or a stage that has already started is refused with the differing keys (a field that
config.json predates, added by a later release, counts only when set away from its
default, which is how the resumed run reads it); ``--force`` starts a new run (the old
workdir is moved aside, never deleted). Data preparation is content-addressed:
``data.data_dir`` is a root and each data hash gets its own folder, so no run can
change another run's vocabulary.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time

import ml_collections

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"


def _tuples(x):
  if isinstance(x, list):
    return tuple(_tuples(v) for v in x)
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  return x


def config_from_json(text: str) -> ml_collections.ConfigDict:
  """A locked config from its JSON (a workdir's ``config.json``; lists become tuples)."""
  config = ml_collections.ConfigDict(_tuples(json.loads(text)))
  config.lock()
  return config


def saved_config(workdir: str) -> ml_collections.ConfigDict | None:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return config_from_json(f.read())


_ABSENT = object()  # a key one of two configs lacks


def diff_keys(a, b, prefix: str, accept_absent=None) -> list[str]:
  """Dotted keys whose values differ between two (nested) mappings.

  ``accept_absent(key, value)``: a key ``a`` lacks is no difference when it returns True
  (a field added after ``a`` was written, at a value that leaves the run unchanged).
  """
  a = a.to_dict() if hasattr(a, "to_dict") else a
  b = b.to_dict() if hasattr(b, "to_dict") else b
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for k in list(dict.fromkeys([*a, *b])):
      out += diff_keys(a.get(k, _ABSENT), b.get(k, _ABSENT), f"{prefix}.{k}", accept_absent)
    return out
  if a is _ABSENT and b is not _ABSENT and accept_absent is not None:
    return [] if accept_absent(prefix, b) else [prefix]
  a, b = (None if v is _ABSENT else v for v in (a, b))
  return [] if _norm(a) == _norm(b) else [prefix]


def _norm(v):
  """A config value as JSON holds it: sequences as lists, dtypes by name."""
  if isinstance(v, (list, tuple)):
    return [_norm(x) for x in v]
  if isinstance(v, type) or type(v).__module__.startswith(("numpy", "ml_dtypes")):
    import numpy as np

    return np.dtype(v).name
  return v


def _field_default(cls, parts: list[str]):
  """The dataclass default of field ``parts`` (a path into ``cls``), or ``_ABSENT``."""
  from m3jax.train.config import field_default

  value = _ABSENT
  for part in parts:
    fields = {f.name: f for f in dataclasses.fields(cls)} if cls is not None else {}
    value = field_default(fields[part]) if part in fields else dataclasses.MISSING
    if value is dataclasses.MISSING:
      return _ABSENT
    cls = type(value) if dataclasses.is_dataclass(value) else None
  if dataclasses.is_dataclass(value):
    return _ABSENT  # a whole new section: compared field by field, never here
  return value


def _at_default(key: str, value) -> bool:
  """Whether ``value`` is the release default of the dotted config ``key``.

  A resumed run reads fields its config.json predates at their defaults (the saved
  config is filled from the dataclasses when built), so a new key left at its default
  changes nothing; a default that would change the data moves ``data.data_dir`` (the
  data hash), which is compared on its own.
  """
  from m3jax.data.config import DataConfig
  from m3jax.model.config import ModelConfig
  from m3jax.train.config import TrainConfig
  from m3jax.train.stages import StageSpec

  parts = key.split(".")
  cls: type | None
  if parts[:2] == ["train", "stages"]:
    cls, path = StageSpec, parts[3:]
  else:
    cls = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}.get(parts[0])
    path = parts[1:]
  default = _field_default(cls, path) if cls is not None and path else _ABSENT
  return default is not _ABSENT and _norm(default) == _norm(value)


def check_same_model(saved, config, workdir: str) -> None:
  """Refuses serving ``workdir``'s weights as another model; keys that only say how the
  model reads its memories (``_READ_TIME``) or how its weights were first drawn
  (``_INIT_ONLY``) may differ, and so may fields ``saved`` predates that ``config`` leaves
  at their defaults (the weights were trained so)."""
  keys = diff_keys(saved.model, config.model, "model", accept_absent=_unchanged_if_absent)
  keys = [k for k in keys if k not in _SERVES_ANY_VALUE]
  if keys:
    raise ValueError(
      f"{workdir} was trained with another model: {', '.join(keys)} differ "
      "from its config.json; drop those overrides (the workdir's config is "
      "used when --config is not given)"
    )


def started_stages(workdir: str) -> list[str]:
  root = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(root):
    return []
  return [
    s for s in os.listdir(root) if any(d.isdigit() for d in os.listdir(os.path.join(root, s)))
  ]


# Keys that only choose another key's value before a run is built (the chosen value is
# saved and compared): absent from an older config.json, any value resumes the same run.
_CHOOSERS = frozenset({"model.memory.ref_len_fit"})
# Keys that change how a trained model reads memory, not its parameters or its bank:
# evaluating with another number of references per chunk is a measurement, not another
# model (docs/design.md, "Session 29").
_READ_TIME = frozenset({"model.memory.refs_per_chunk"})
# Keys that only say how a new run draws its weights: trained weights serve the same
# whatever they were (resuming a run compares them: another scale is another run).
_INIT_ONLY = frozenset({"model.init_std"})
_SERVES_ANY_VALUE = _READ_TIME | _INIT_ONLY


def _unchanged_if_absent(key: str, value) -> bool:
  return key in _CHOOSERS or _at_default(key, value)


def resume_conflicts(saved, config, workdir: str) -> list[str]:
  """Keys of ``config`` that make resuming ``workdir`` (trained as ``saved``) another run.

  Keys the saved config lacks (fields a later release added) conflict only when set
  away from their default, or never for a key in ``_CHOOSERS`` (``ref_len_fit`` picks
  ``ref_len``, which is compared itself).
  """
  from m3jax.train.config import RUN, stage_dicts, train_keys

  diff = lambda a, b, prefix: diff_keys(a, b, prefix, accept_absent=_unchanged_if_absent)
  keys = diff(saved.model, config.model, "model")
  keys += diff(saved.get("data"), config.get("data"), "data")
  keys += diff(saved.get("seed"), config.get("seed"), "seed")
  for k in train_keys(RUN):  # stages: compared once started, below
    keys += diff(saved.train.get(k, _ABSENT), config.train.get(k, _ABSENT), f"train.{k}")
  old = {s["name"]: s for s in stage_dicts(saved.train)}
  new = {s["name"]: s for s in stage_dicts(config.train)}
  for name in started_stages(workdir):
    keys += diff(old.get(name), new.get(name), f"train.stages.{name}")
  return keys


def new_keys(saved, config) -> list[str]:
  """Keys of ``config`` that ``saved`` lacks (fields added since it was written)."""
  out: list[str] = []

  def record(key: str, _) -> bool:
    out.append(key[1:])
    return True

  diff_keys(saved, config, "", accept_absent=record)
  return out


def start_run(workdir: str, config, *, force: bool = False) -> None:
  """Records ``config`` in ``workdir`` or refuses a resume that would change the run.

  ``force``: an existing run is moved to ``<workdir>.replaced-<time>`` and a new one starts.
  """
  saved = saved_config(workdir)
  if saved is not None and force:
    aside = f"{os.path.abspath(workdir).rstrip('/')}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
    os.rename(workdir, aside)
    print(f"[m3jax.train] --force: the previous run moved to {aside}")
    saved = None
  elif saved is not None:
    keys = resume_conflicts(saved, config, workdir)
    if keys:
      raise ValueError(
        f"{workdir} holds a run with another config: {', '.join(keys)} "
        "differ; resume with its config (drop those overrides), use another "
        "--workdir, or --force to start a new run here"
      )
    added = new_keys(saved, config)
    if added:
      print(f"[m3jax.train] resuming a run that predates {', '.join(added)}: at their defaults")
  os.makedirs(workdir, exist_ok=True)
  _atomic_write(os.path.join(workdir, CONFIG_FILE), config.to_json(indent=1))


def record_run(workdir: str, config) -> dict:
  """Writes ``run.json``: package version, data hash, vocabulary hash (when prepared)."""
  from importlib import metadata

  try:
    version = metadata.version("m3jax")
  except metadata.PackageNotFoundError:
    version = "unknown"
  rec = {"m3jax_version": version, "data_hash": None, "vocab_hash": None, "data_dir": None}
  if "data" in config and config.train.data_source == "pipeline":
    from m3jax.data.config import data_config_from
    from m3jax.data.prepare import DataPaths, sources_key

    cfg = data_config_from(config.data)
    rec["data_hash"], rec["data_dir"] = sources_key(cfg), cfg.data_dir
    vocab = DataPaths(cfg.data_dir).vocab_model
    if os.path.exists(vocab):
      with open(vocab, "rb") as f:
        rec["vocab_hash"] = hashlib.sha256(f.read()).hexdigest()[:16]
  _atomic_write(os.path.join(workdir, RUN_FILE), json.dumps(rec, indent=1))
  return rec


def content_addressed(config):
  """``config`` with ``data.data_dir`` = ``<root>/<data hash>``, absolute (idempotent, in
  place)."""
  if "data" not in config or config.train.get("data_source", "pipeline") != "pipeline":
    return config
  from m3jax.data.config import data_config_from
  from m3jax.data.prepare import sources_key

  key = sources_key(data_config_from(config.data))
  root = os.path.abspath(str(config.data.data_dir))  # config.json works from any cwd
  if os.path.basename(root.rstrip("/")) != key:
    root = os.path.join(root, key)
  config.data.data_dir = root
  return config


def _atomic_write(path: str, text: str) -> None:
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)
