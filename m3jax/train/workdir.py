"""A workdir is one run: ``train`` records what it was, and refuses to become another.

``<workdir>/config.json``  the resolved config (every later command reads it)
``<workdir>/run.json``     package version, data hash (``sources_key``), vocabulary hash

Resuming with a config that changes the model, the data, the training hyperparameters
or a stage that has already started is refused with the differing keys; ``--force``
starts a new run (the old workdir is moved aside, never deleted). Data preparation is
content-addressed: ``data.data_dir`` is a root and each data hash gets its own folder,
so no run can change another run's vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import ml_collections

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"
# train keys whose change makes a resumed run a different run (stages: once started).
_TRAIN_KEYS = (
  "batch_size",
  "data_source",
  "weight_decay",
  "b1",
  "b2",
  "eps",
  "grad_clip",
  "z_loss",
  "fallback_seq_len",
)


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


def diff_keys(a, b, prefix: str) -> list[str]:
  """Dotted keys whose values differ between two (nested) mappings."""
  a = a.to_dict() if hasattr(a, "to_dict") else a
  b = b.to_dict() if hasattr(b, "to_dict") else b
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for k in list(dict.fromkeys([*a, *b])):
      out += diff_keys(a.get(k), b.get(k), f"{prefix}.{k}")
    return out
  norm = lambda v: list(map(norm, v)) if isinstance(v, (list, tuple)) else v
  return [] if norm(a) == norm(b) else [prefix]


def check_same_model(saved, config, workdir: str) -> None:
  keys = diff_keys(saved.model, config.model, "model")
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


def resume_conflicts(saved, config, workdir: str) -> list[str]:
  """Keys of ``config`` that make resuming ``workdir`` (trained as ``saved``) another run."""
  keys = diff_keys(saved.model, config.model, "model")
  keys += diff_keys(saved.get("data"), config.get("data"), "data")
  keys += diff_keys(saved.get("seed"), config.get("seed"), "seed")
  for k in _TRAIN_KEYS:
    keys += diff_keys(saved.train.get(k), config.train.get(k), f"train.{k}")
  from m3jax.train.config import stage_dicts

  old = {s["name"]: s for s in stage_dicts(saved.train)}
  new = {s["name"]: s for s in stage_dicts(config.train)}
  for name in started_stages(workdir):
    keys += diff_keys(old.get(name), new.get(name), f"train.stages.{name}")
  return keys


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
