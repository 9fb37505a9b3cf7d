"""Run configs from ``path.py:variant`` specs plus ``--config.a.b=value`` overrides.

Every command loads its config the same way:

  cfg = load_config("configs/memory3.py:small", ["--config.model.num_layers=8"])

The file is imported by path and must define ``get_config(arg)``. Overrides walk the
ConfigDict (integer components index lists, e.g. ``train.stages.1.peak_lr``); values are
parsed as Python literals and coerced to the type already there. An unknown key fails
with the close matches, so a typo never silently trains the wrong model.

argparse cannot declare ``--config.*`` options up front, so
:func:`add_config_arguments` teaches a (sub)parser to collect them into
``args.config_overrides`` (use :func:`config_from_args` to build the config).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib.util
import os
import sys
from typing import Any, Iterable, Mapping

import ml_collections

_PREFIX = "--config."


def _import_file(path: str):
  if not os.path.exists(path):
    raise FileNotFoundError(f"config file {path!r} not found (spec form: "
                            "configs/memory3.py:small)")
  # Config files import siblings as ``configs.sections...``: make the repo root importable.
  root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
  if root not in sys.path:
    sys.path.insert(0, root)
  name = "_m3jax_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_module(spec: str):
  """The module of ``path.py[:arg]`` and the arg (``None`` when absent)."""
  path, _, arg = spec.partition(":")
  return _import_file(path), (arg or None)


def load_config(spec: str, overrides: Iterable[str] | Mapping[str, Any] = ()
                ) -> ml_collections.ConfigDict:
  """``get_config(arg)`` of ``path.py:arg`` with overrides applied.

  ``overrides`` is either CLI strings (``--config.a.b=v`` or ``a.b=v``) or a mapping
  ``{"a.b": value}`` (sweeps).
  """
  module, arg = load_module(spec)
  if not hasattr(module, "get_config"):
    raise ValueError(f"{spec}: the file defines no get_config(arg)")
  config = module.get_config(arg) if arg is not None else module.get_config()
  return apply_overrides(config, overrides)


def parse_override(text: str) -> tuple[str, Any]:
  """``--config.a.b=v`` -> ("a.b", parsed v)."""
  body = text[len(_PREFIX):] if text.startswith(_PREFIX) else text.lstrip("-")
  if body.startswith("config."):
    body = body[len("config."):]
  key, sep, raw = body.partition("=")
  if not sep or not key:
    raise ValueError(f"override {text!r} must look like --config.a.b=value")
  return key, _parse_value(raw)


def _parse_value(raw: str):
  low = raw.strip().lower()
  if low in ("true", "false"):
    return low == "true"
  if low in ("none", "null"):
    return None
  try:
    return ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    return raw


def _keys_of(node) -> list[str]:
  if isinstance(node, (list, tuple)):
    return [str(i) for i in range(len(node))]
  return list(node.keys())


def _child(node, part: str, path: str):
  if isinstance(node, (list, tuple)):
    if part.isdigit() and int(part) < len(node):
      return node[int(part)]
  elif part in node:
    return node[part]
  keys = _keys_of(node)
  close = difflib.get_close_matches(part, keys, n=5, cutoff=0.5)
  hint = f"; did you mean {close}?" if close else ""
  raise KeyError(f"unknown config key {path!r}{hint} (valid keys here: {sorted(keys)})")


def _coerce(old, new, path: str):
  if old is None or new is None:
    return new
  if isinstance(old, bool):
    if not isinstance(new, bool):
      raise ValueError(f"--config.{path}: expected true/false, got {new!r}")
    return new
  if isinstance(old, float) and isinstance(new, int):
    return float(new)
  if isinstance(old, tuple) and isinstance(new, list):
    return tuple(new)
  if isinstance(old, (int, float)) and isinstance(new, str):
    raise ValueError(f"--config.{path}: expected a number, got {new!r}")
  if isinstance(old, str) and not isinstance(new, str):
    return str(new)
  return new


def set_path(config, key: str, value) -> None:
  """Sets ``config[a][b]... = value`` for key ``a.b...``; unknown keys raise KeyError."""
  parts = key.split(".")
  node = config
  for i, part in enumerate(parts[:-1]):
    node = _child(node, part, ".".join(parts[:i + 1]))
  last = parts[-1]
  old = _child(node, last, key)
  value = _coerce(old, value, key)
  if isinstance(node, tuple):
    raise ValueError(f"--config.{key}: cannot assign into a tuple; override the whole "
                     f"{'.'.join(parts[:-1])}")
  if isinstance(node, list):
    node[int(last)] = value
  elif isinstance(node, ml_collections.ConfigDict):
    with node.ignore_type():
      node[last] = value
  else:
    node[last] = value


def apply_overrides(config, overrides: Iterable[str] | Mapping[str, Any]):
  items = (list(overrides.items()) if isinstance(overrides, Mapping)
           else [parse_override(o) for o in overrides])
  for key, value in items:
    set_path(config, key, value)
  return config


# ----------------------------------------------------------------------------- argparse
def add_config_arguments(parser: argparse.ArgumentParser, default: str = "configs/memory3.py:small"):
  """Adds ``--config SPEC`` and lets the parser accept ``--config.a.b=v`` overrides.

  The overrides land in ``args.config_overrides`` (argparse's sub-parsers call
  ``parse_known_args``; we claim the ``--config.`` leftovers there).
  """
  parser.add_argument("--config", default=default,
                      help="config spec path.py:variant; override with --config.a.b=value")
  parser.set_defaults(config_overrides=[])
  original = parser.parse_known_args

  def parse_known_args(args=None, namespace=None):
    args = list(sys.argv[1:] if args is None else args)
    mine, rest, i = [], [], 0
    while i < len(args):
      a = args[i]
      if a.startswith(_PREFIX):
        if "=" not in a and i + 1 < len(args):   # --config.a.b value
          a = f"{a}={args[i + 1]}"
          i += 1
        mine.append(a)
      else:
        rest.append(a)
      i += 1
    ns, extra = original(rest, namespace)
    ns.config_overrides = list(getattr(ns, "config_overrides", []) or []) + mine
    return ns, extra

  parser.parse_known_args = parse_known_args
  return parser


def config_from_args(args) -> ml_collections.ConfigDict:
  return load_config(args.config, getattr(args, "config_overrides", []))
